//! What each rule's finding means for the data and how to fix it, for
//! tools that show a rule apart from its findings (SARIF's rule
//! descriptors: full description and help). docs/rules.md says the same at
//! length, with code in C, Go, Python and Rust.

/// A rule's consequence and its fix, in a sentence or two each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHelp {
    /// What a crash or power loss does to the data.
    pub risk: &'static str,
    /// What the program must do instead.
    pub fix: &'static str,
}

/// The help of rule `id`; None for a rule this table does not know yet.
pub fn rule_help(id: &str) -> Option<RuleHelp> {
    let (risk, fix) = match id {
        "rename-without-fsync" => (
            "The new name can reach the disk before the data: after a crash the file at the destination is empty or partial, and the content it replaced is gone. ext4 (auto_da_alloc) and btrfs start writing the data when a rename replaces an existing file, which narrows the window but guarantees nothing; XFS does not.",
            "fsync (or fdatasync) the file before renaming it, then fsync the directory.",
        ),
        "killed-while-dirty" => (
            "The process was killed with written data only in the page cache. The kernel still writes it back, but a crash or power loss before that loses it or leaves it partial, on every filesystem.",
            "fsync at the points where the data must survive (after each record or commit), and on SIGTERM sync before exiting.",
        ),
        "killed-mid-write" => (
            "A write cut short by a kill leaves a torn record in the file, crash or not: the next reader finds half a record.",
            "Make records self-validating (length and checksum) and cut a torn tail on open, or write aside and rename into place.",
        ),
        "truncate-in-place" => (
            "Between the truncation and the new content being durable, a crash leaves the file empty or partial: the old content is gone and the new one is not there yet. ext4 (auto_da_alloc) and XFS flush such files early, which narrows the window but guarantees nothing.",
            "Write the new content to a temporary file, fsync it, rename it over the old one, fsync the directory.",
        ),
        "fsync-error-ignored" => (
            "After a failed fsync the kernel may have dropped the dirty pages and cleared the error, so a retry can succeed with the data never written; renaming or writing more builds on data that is not on disk.",
            "Treat a failed fsync as the loss of everything written since the last good one: do not retry and go on; rewrite the data from your own copy into a new file, or stop and recover from your log.",
        ),
        "unsynced-at-exit" => (
            "The process ended with written data only in the page cache: a crash or power loss before writeback (usually 5 to 30 s later) loses it or leaves it partial, on every filesystem.",
            "fsync (or fdatasync) the file before exiting, or before telling anyone the data is saved.",
        ),
        "rename-without-dir-fsync" => (
            "A rename is a change to the directory, which was never fsynced: after a crash the old name (or no name) can come back, losing the update even though the file's data was synced.",
            "Open the directory and fsync it after the rename.",
        ),
        "interleaved-writers" => (
            "Several writers append to one file in turn: a crash, or a kill of one writer, leaves a torn record among the others', and readers cannot tell where records start.",
            "Give each writer its own file, or write whole records under a lock, each with its length and a checksum.",
        ),
        "create-without-dir-fsync" => (
            "The new file's data was synced but its directory entry never was: after a crash the file can be missing altogether.",
            "fsync the directory once the new file is created (and fsynced).",
        ),
        "unlink-without-dir-fsync" => (
            "A removal is a change to the directory, which was never fsynced: a crash can bring the file back, such as a rollback journal whose deletion was the commit, undoing a committed transaction.",
            "fsync the directory after an unlink that commits something.",
        ),
        "sync-file-range-only" => (
            "sync_file_range writes data pages but neither the metadata needed to read them back (size, block map) nor the disk's cache: it makes nothing durable.",
            "Use fdatasync or fsync.",
        ),
        "archive-not-self-contained" => (
            "A disk image was shipped without the file it depends on (a qcow2 backing file, VMDK extents): wherever it is restored it reads whatever that path holds there, another base or nothing.",
            "Flatten the image before shipping it (qemu-img rebase -b \"\" IMAGE), or ship the file it depends on with it under a relative path.",
        ),
        "commit-before-data" => (
            "A record was made durable before the data a helper wrote for it: after a crash the record says the work is done while the data is empty, partial or missing.",
            "Make the data durable first (fsync each file and its directory, or syncfs the filesystem), then fsync and rename the record into place.",
        ),
        _ => return None,
    };
    Some(RuleHelp { risk, fix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RULES;

    /// A rule added without help would reach SARIF consumers with its title
    /// only: each rule must say what a crash does and how to fix it.
    #[test]
    fn every_rule_has_help() {
        for r in RULES {
            let h = rule_help(r.id).unwrap_or_else(|| {
                panic!(
                    "rule {} has no help: add what a crash does and the fix to report/help.rs (and docs/rules.md)",
                    r.id
                )
            });
            assert!(h.risk.ends_with('.') && h.fix.ends_with('.'), "{}", r.id);
        }
        assert_eq!(rule_help("no-such-rule"), None);
    }

    /// The rules reference people are sent to documents every rule.
    #[test]
    fn every_rule_has_a_section_in_the_rules_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md");
        let doc = std::fs::read_to_string(path).unwrap();
        for r in RULES {
            assert!(
                doc.contains(&format!("\n## `{}`\n", r.id)),
                "docs/rules.md has no section for {}",
                r.id
            );
            assert!(
                doc.contains(&format!("| [`{}`](#{})", r.id, r.id)),
                "docs/rules.md's table lacks {}",
                r.id
            );
        }
    }
}
