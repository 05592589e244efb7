//! A file's identity, apart from the events that carry it, so the models
//! of what a file is (disk images, inodes) need not depend on events.

use serde::{Deserialize, Serialize};

/// A file's identity: device and inode. Paths are for people; this is what
/// matches a write through one fd to an fsync through another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    /// Device number in userspace (`stat.st_dev`) encoding.
    pub dev: u64,
    pub ino: u64,
}
