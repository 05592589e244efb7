//! Where in the code a call was made: the user stack the probes took at the
//! call, unwound and symbolized while the process lived. A finding carries
//! the stack of the call that put the data at risk (the rename, the first
//! unsynced write, the create, ...), so it names a function and a line.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One frame, innermost first in a [`Stack`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The instruction (innermost frame) or return address, as the process
    /// had it.
    pub address: u64,
    /// Demangled function name, when the object's symbols or debug
    /// information name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Source file and line, when the object has line information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The mapped object (executable or library) and the offset in that
    /// file, which `addr2line -e OBJECT` resolves again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A function the compiler inlined into the next frame's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

/// How the frames were found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwind {
    /// The frame-pointer chain gave every frame the unwind tables gave.
    FramePointers,
    /// Frame pointers were missing or wrong: the frames come from the
    /// binaries' unwind tables (`.eh_frame`) over a copy of the stack.
    #[default]
    Dwarf,
}

/// A program run by an interpreter: the native frames are the interpreter's
/// own, not the script's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    /// `python3`, `sh`, `perl`, ...
    pub name: String,
    /// The script it runs (`save.py`), or what it runs instead (`-c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

impl Interpreter {
    /// `python3 running save.py`, or the interpreter alone.
    pub fn describe(&self) -> String {
        match &self.script {
            Some(s) => format!("{} running {s}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A user stack, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub unwind: Unwind,
    /// The copy of the stack ended before its outermost frame: callers
    /// further out are missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Interpreter>,
}

/// Objects whose frames are the C library's, the loader's or the kernel's
/// (the syscall wrapper), not the program's: the short form skips them.
fn is_system_object(object: &str) -> bool {
    let name = object.rsplit('/').next().unwrap_or(object);
    [
        "libc.so",
        "libc-",
        "ld-linux",
        "ld-musl",
        "libpthread",
        "[vdso]",
        "libstdc++",
        "libgcc_s",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

impl Frame {
    /// `save_state (src/state.rs:42)`, `save_state`, or `libc.so.6+0x1234`.
    pub fn describe(&self) -> String {
        let place = match (&self.file, self.line) {
            (Some(f), Some(l)) => Some(format!("{f}:{l}")),
            (Some(f), None) => Some(f.clone()),
            _ => None,
        };
        match (&self.function, place) {
            (Some(func), Some(p)) => format!("{func} ({p})"),
            (Some(func), None) => func.clone(),
            (None, Some(p)) => p,
            (None, None) => match (&self.object, self.offset) {
                (Some(o), Some(off)) => {
                    format!("{}+{off:#x}", o.rsplit('/').next().unwrap_or(o))
                }
                _ => format!("{:#x}", self.address),
            },
        }
    }

    fn is_system(&self) -> bool {
        self.object.as_deref().is_some_and(is_system_object)
    }
}

impl Stack {
    /// The frames worth a first look: from the first one in the program's
    /// own code (past the C library's syscall wrapper), at most `n`.
    pub fn program_frames(&self, n: usize) -> &[Frame] {
        let start = self.frames.iter().position(|f| !f.is_system()).unwrap_or(0);
        let end = (start + n).min(self.frames.len());
        &self.frames[start..end]
    }

    /// [`Stack::short`] with source files inside `base` (the repository)
    /// shown relative to it.
    pub fn short_in(&self, n: usize, base: Option<&str>) -> String {
        let Some(base) = base
            .map(|b| b.trim_end_matches('/'))
            .filter(|b| !b.is_empty())
        else {
            return self.short(n);
        };
        let mut s = self.clone();
        for f in &mut s.frames {
            if let Some(rel) = f
                .file
                .as_deref()
                .and_then(|p| p.strip_prefix(base))
                .and_then(|r| r.strip_prefix('/'))
            {
                f.file = Some(rel.to_string());
            }
        }
        s.short(n)
    }

    /// `at save_state (src/state.rs:42) <- main (src/main.rs:10)`, with the
    /// interpreter said first when there is one.
    pub fn short(&self, n: usize) -> String {
        let mut out = String::new();
        if let Some(i) = &self.interpreter {
            let _ = write!(out, "in {} (interpreter frames): ", i.describe());
        }
        let frames: Vec<String> = self.program_frames(n).iter().map(Frame::describe).collect();
        if frames.is_empty() {
            out.push_str("no frames");
        } else {
            out.push_str("at ");
            out.push_str(&frames.join(" <- "));
        }
        out
    }

    /// The first frame in the program's own code with a source file.
    pub fn source_frame(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| !f.is_system() && f.file.is_some() && f.line.is_some())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A named frame at a fixed address, for tests here and elsewhere.
    pub(crate) fn frame(
        function: &str,
        file: Option<&str>,
        line: Option<u32>,
        object: &str,
    ) -> Frame {
        Frame {
            address: 0x1000,
            function: Some(function.into()),
            file: file.map(Into::into),
            line,
            object: Some(object.into()),
            offset: Some(0x10),
            inlined: false,
        }
    }

    #[test]
    fn short_form_starts_in_the_program_and_says_where() {
        let s = Stack {
            frames: vec![
                frame("rename", None, None, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                frame(
                    "save_state",
                    Some("src/state.c"),
                    Some(42),
                    "/opt/app/bin/app",
                ),
                frame("main", Some("src/main.c"), Some(10), "/opt/app/bin/app"),
                frame(
                    "__libc_start_call_main",
                    None,
                    None,
                    "/usr/lib/x86_64-linux-gnu/libc.so.6",
                ),
            ],
            ..Stack::default()
        };
        assert_eq!(
            s.short(2),
            "at save_state (src/state.c:42) <- main (src/main.c:10)"
        );
        assert_eq!(s.source_frame().unwrap().line, Some(42));
    }

    #[test]
    fn files_in_the_repository_are_shown_relative_to_it() {
        let s = Stack {
            frames: vec![frame(
                "save",
                Some("/src/app/state.c"),
                Some(3),
                "/src/app/app",
            )],
            ..Stack::default()
        };
        assert_eq!(s.short_in(1, Some("/src/app")), "at save (state.c:3)");
        assert_eq!(
            s.short_in(1, Some("/src/ap")),
            "at save (/src/app/state.c:3)"
        );
        assert_eq!(s.short_in(1, None), "at save (/src/app/state.c:3)");
    }

    #[test]
    fn unnamed_frames_show_their_object_and_offset() {
        let mut f = frame("x", None, None, "/lib/libfoo.so.1");
        f.function = None;
        assert_eq!(f.describe(), "libfoo.so.1+0x10");
        f.object = None;
        assert_eq!(f.describe(), "0x1000");
    }

    #[test]
    fn interpreters_are_named_before_their_native_frames() {
        let s = Stack {
            frames: vec![frame(
                "_Py_write",
                Some("Python/fileutils.c"),
                Some(1800),
                "/usr/bin/python3.11",
            )],
            interpreter: Some(Interpreter {
                name: "python3".into(),
                script: Some("save.py".into()),
            }),
            ..Stack::default()
        };
        assert_eq!(
            s.short(1),
            "in python3 running save.py (interpreter frames): at _Py_write (Python/fileutils.c:1800)"
        );
    }
}
