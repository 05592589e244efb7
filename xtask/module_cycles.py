"""Fails when two modules of a crate import each other (`use crate::...` or
`super::...`, test modules left out): such pairs are what a layer below them
should hold. Usage: module_cycles.py SRC_DIR...  (each a crate's src/)."""

import os
import re
import sys


def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "main", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def imports(root):
    sources = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                with open(p, encoding="utf-8") as f:
                    sources[module_of(root, p)] = f.read()
    modules = set(sources)
    edges = {m: set() for m in modules}
    for m, src in sources.items():
        src = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", src, flags=re.S)
        for head, tail in re.findall(r"\b(crate|super)((?:::\w+)+)", src):
            base = [] if head == "crate" else list(m[:-1])
            path = tuple(base + tail.split("::")[1:])
            while path and path not in modules:
                path = path[:-1]
            # A module may use its own children and its parents' items.
            if path and path != m[: len(path)] and m != path[: len(m)]:
                edges[m].add(path)
    return {
        tuple(sorted((a, b)))
        for a in modules
        for b in edges[a]
        if a in edges.get(b, ())
    }


def main():
    bad = 0
    for root in sys.argv[1:]:
        for a, b in sorted(imports(root)):
            print(f"{root}: {'::'.join(a)} and {'::'.join(b)} import each other")
            bad += 1
    if bad:
        sys.exit(1)
    print(f"module imports: no two modules import each other ({len(sys.argv) - 1} crates)")


main()
