//! cgroup v2: finding the unified hierarchy, turning `--cgroup` (a path or a
//! container id) into a cgroup, and reading container ids out of cgroup
//! names the way runtimes write them (`docker-<id>.scope`,
//! `cri-containerd-<id>.scope`, `libpod-<id>.scope`, `.../docker/<id>`).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::error::UserError;

/// A resolved `--cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// As /proc/PID/cgroup shows it: `/` is the root of the hierarchy.
    pub path: String,
    /// The kernel's cgroup id (the directory's inode number), which is what
    /// `bpf_get_current_ancestor_cgroup_id` returns.
    pub id: u64,
}

impl Cgroup {
    /// Whether a process in cgroup `path` is in this cgroup or below it.
    pub fn contains(&self, path: &str) -> bool {
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Where the unified hierarchy is mounted (`/sys/fs/cgroup` on pure v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn unified_root() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Resolves `arg`: a directory under the hierarchy (absolute, or as
/// /proc/PID/cgroup writes it), else a container id (or a unique prefix of
/// one) searched for in cgroup names.
pub fn resolve(arg: &str, root: &Path) -> Result<Cgroup, UserError> {
    let as_dir = match Path::new(arg).strip_prefix(root) {
        Ok(rel) => Some(root.join(rel)),
        Err(_) => arg.strip_prefix('/').map(|rel| root.join(rel)),
    };
    if let Some(dir) = as_dir.filter(|d| d.is_dir()) {
        return at(root, &dir);
    }
    let hexish = arg.len() >= 12 && arg.bytes().all(|b| b.is_ascii_hexdigit());
    if !hexish {
        return Err(UserError::new(format!(
            "--cgroup {arg}: no such cgroup under {} (give a cgroup v2 path or a container id)",
            root.display()
        )));
    }
    let mut found = Vec::new();
    search(root, arg, 0, &mut found);
    match found.as_slice() {
        [one] => at(root, one),
        [] => Err(UserError::new(format!(
            "--cgroup {arg}: no cgroup under {} names that container id",
            root.display()
        ))),
        many => Err(UserError::new(format!(
            "--cgroup {arg}: {} cgroups match that id (e.g. {}); give more of it",
            many.len(),
            many[0].display()
        ))),
    }
}

fn at(root: &Path, dir: &Path) -> Result<Cgroup, UserError> {
    let m = std::fs::metadata(dir)
        .map_err(|e| UserError::new(format!("cannot read cgroup {}: {e}", dir.display())))?;
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    Ok(Cgroup {
        path: format!("/{}", rel.display()).replace("//", "/"),
        id: m.ino(),
    })
}

/// Depth-first search for directories whose container id starts with `id`;
/// the outermost match wins (a container's own sub-cgroups share its id).
fn search(dir: &Path, id: &str, depth: usize, found: &mut Vec<PathBuf>) {
    if depth > 8 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        if container_id_of(&name).is_some_and(|c| c.starts_with(id)) {
            found.push(e.path());
        } else {
            search(&e.path(), id, depth + 1, found);
        }
    }
}

/// The container id a cgroup path shows, if any: its innermost component
/// that is (or wraps) 64 hex digits.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(container_id_of)
}

fn container_id_of(component: &str) -> Option<String> {
    let s = component.strip_suffix(".scope").unwrap_or(component);
    let s = s.rsplit(['-', ':']).next().unwrap_or(s);
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

    #[test]
    fn container_ids_from_runtime_names() {
        for p in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/docker/{ID}"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
        ] {
            assert_eq!(container_id(&p).as_deref(), Some(ID), "{p}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn containment_respects_component_boundaries() {
        let c = Cgroup {
            path: "/a/b".into(),
            id: 1,
        };
        assert!(c.contains("/a/b"));
        assert!(c.contains("/a/b/c"));
        assert!(!c.contains("/a/bc"));
        assert!(!c.contains("/a"));
    }

    #[test]
    fn resolves_paths_and_container_ids_in_a_tree() {
        let root = std::env::temp_dir().join(format!("auditor-cg-{}", std::process::id()));
        let scope = root.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(scope.join("init")).unwrap();
        std::fs::create_dir_all(root.join("user.slice")).unwrap();
        let ino = std::fs::metadata(&scope).unwrap().ino();
        let want = Cgroup {
            path: format!("/system.slice/docker-{ID}.scope"),
            id: ino,
        };
        assert_eq!(resolve(&want.path, &root).unwrap(), want);
        assert_eq!(resolve(scope.to_str().unwrap(), &root).unwrap(), want);
        assert_eq!(resolve(&ID[..12], &root).unwrap(), want);
        assert_eq!(resolve(ID, &root).unwrap(), want);
        assert_eq!(resolve("/", &root).unwrap().path, "/");
        let e = resolve("/no/such", &root).unwrap_err().to_string();
        assert!(e.contains("no such cgroup"), "{e}");
        let e = resolve("abcdefabcdef", &root).unwrap_err().to_string();
        assert!(e.contains("names that container id"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
