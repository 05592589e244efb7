//! What a disk image needs outside itself. A thin qcow2 overlay reads the
//! clusters it never wrote from its backing file; a VMDK descriptor holds no
//! data at all, only the names of its extents. Copied or archived without
//! them, the image is not the disk it was: restored elsewhere it reads
//! whatever those names hold there. Only the live system can read an
//! image's header, so capture attaches this to the open that read it, and
//! recordings carry it.

use serde::{Deserialize, Serialize};

use crate::file_id::FileId;

/// A disk image's header, as read when a traced process opened it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `qcow2`, `qcow` (version 1) or `vmdk`.
    pub format: String,
    /// Every file it needs outside itself: what the image names first, then
    /// what each of those names in turn (a chain of overlays), each once.
    #[serde(default)]
    pub needs: Vec<Dependency>,
    /// The chain was deeper, or named more files, than is followed: `needs`
    /// is cut short.
    #[serde(default)]
    pub cut: bool,
}

/// Why an image names another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// qcow2: where unwritten clusters are read from.
    BackingFile,
    /// qcow2: an external data file holding all guest data.
    DataFile,
    /// VMDK: a file holding part of the disk.
    Extent,
    /// VMDK: the parent of a delta disk.
    Parent,
}

impl Role {
    /// How people say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::BackingFile => "backing file",
            Role::DataFile => "data file",
            Role::Extent => "extent",
            Role::Parent => "parent",
        }
    }
}

/// How the image names the file, which says where it resolves elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// An absolute path: elsewhere, whatever that path holds there.
    Absolute,
    /// Relative to the directory of the image naming it.
    Relative,
    /// A protocol or pseudo-file (`nbd://...`, `json:{...}`): not a file.
    Protocol,
    /// Not usable as a path (control characters, not UTF-8, too long, or
    /// beyond what the header may hold): never looked up.
    Invalid,
}

/// What the name led to on this machine when the header was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepState {
    /// A regular file (its identity is known).
    Present,
    /// Nothing there.
    Missing,
    /// A symbolic link, which is not followed.
    Symlink,
    /// Something other than a regular file (a directory, a device).
    NotRegular,
    /// It could not be looked at (permissions, a loop, an I/O error).
    Unreadable,
    /// The name is not a path here (a protocol, an invalid name).
    NotAPath,
}

/// One file an image needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub role: Role,
    /// As the image names it; bytes that are not printable UTF-8 shown as
    /// `\xNN`, and cut at 1024 bytes.
    pub name: String,
    pub naming: Naming,
    /// Where the name resolves, for a path.
    pub path: Option<String>,
    pub state: DepState,
    /// Its identity, when present.
    pub file: Option<FileId>,
    /// Its format when it is itself an image, else the one the naming
    /// image declares for it (`raw`, ...), when it does.
    pub format: Option<String>,
    /// The image that names it: the one opened, or a link of its chain.
    pub named_by: String,
    /// 1 for what the opened image names, 2 for what that one names, ...
    pub depth: u32,
}

impl ImageInfo {
    /// Whether the image needs anything outside itself.
    pub fn is_thin(&self) -> bool {
        !self.needs.is_empty()
    }
}
