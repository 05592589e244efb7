//! A finding as the reports print it: members in name order (byte order,
//! as a `serde_json::Map` keeps them), written straight from the finding.
//! Going through a map of values per finding first made writing the
//! 50,000-finding report take seconds; the order stays what it was, so
//! reports are byte for byte the same.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::finding::{CallRef, Finding, ProcessRef};
use crate::stack::{Frame, Interpreter, Stack};

/// `f` in name order; with `kind`, a last `"type"` member (JSON Lines).
pub struct Sorted<'a> {
    pub finding: &'a Finding,
    pub kind: Option<&'a str>,
}

impl<'a> Sorted<'a> {
    pub fn new(finding: &'a Finding) -> Sorted<'a> {
        Sorted {
            finding,
            kind: None,
        }
    }
}

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.finding;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("calls", &Seq(&f.calls, Call))?;
        if let Some(c) = &f.container {
            m.serialize_entry("container", c)?;
        }
        m.serialize_entry("evidence", &f.evidence)?;
        if let Some(fp) = &f.fingerprint {
            m.serialize_entry("fingerprint", fp)?;
        }
        if let Some(g) = &f.group {
            m.serialize_entry("group", g)?;
        }
        if let Some(h) = &f.host_path_unknown {
            m.serialize_entry("host_path_unknown", h)?;
        }
        m.serialize_entry("inconclusive", &f.inconclusive)?;
        m.serialize_entry("inconclusive_reason", &f.inconclusive_reason)?;
        m.serialize_entry("inode", &f.inode)?;
        m.serialize_entry("path", &f.path)?;
        if let Some(p) = &f.path_in_process {
            m.serialize_entry("path_in_process", p)?;
        }
        m.serialize_entry("process", &Process(&f.process))?;
        m.serialize_entry("rule", &f.rule)?;
        m.serialize_entry("severity", &f.severity)?;
        if let Some(st) = &f.stack {
            m.serialize_entry("stack", &Frames(st))?;
        }
        m.serialize_entry("summary", &f.summary)?;
        if let Some(k) = self.kind {
            m.serialize_entry("type", k)?;
        }
        m.end()
    }
}

struct Process<'a>(&'a ProcessRef);

impl Serialize for Process<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        if !p.argv.is_empty() {
            m.serialize_entry("argv", &*p.argv)?;
        }
        m.serialize_entry("comm", &*p.comm)?;
        m.serialize_entry("exe", &p.exe.as_deref())?;
        m.serialize_entry("pid", &p.pid)?;
        m.end()
    }
}

/// A slice, each element written through `each` (one of the wrappers here).
struct Seq<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Seq<'a, T, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for x in self.0 {
            seq.serialize_element(&(self.1)(x))?;
        }
        seq.end()
    }
}

struct Call<'a>(&'a CallRef);

impl Serialize for Call<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("call", &c.call)?;
        m.serialize_entry("comm", &c.comm)?;
        m.serialize_entry("pid", &c.pid)?;
        m.serialize_entry("seq", &c.seq)?;
        m.serialize_entry("tid", &c.tid)?;
        m.serialize_entry("ts_ns", &c.ts_ns)?;
        m.end()
    }
}

/// A stack in name order.
struct Frames<'a>(&'a Stack);

impl Serialize for Frames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("frames", &Seq(&st.frames, OneFrame))?;
        if let Some(i) = &st.interpreter {
            m.serialize_entry("interpreter", &Interp(i))?;
        }
        if st.truncated {
            m.serialize_entry("truncated", &true)?;
        }
        m.serialize_entry("unwind", &st.unwind)?;
        m.end()
    }
}

struct OneFrame<'a>(&'a Frame);

impl Serialize for OneFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("address", &f.address)?;
        if let Some(v) = &f.file {
            m.serialize_entry("file", v)?;
        }
        if let Some(v) = &f.function {
            m.serialize_entry("function", v)?;
        }
        if f.inlined {
            m.serialize_entry("inlined", &true)?;
        }
        if let Some(v) = &f.line {
            m.serialize_entry("line", v)?;
        }
        if let Some(v) = &f.object {
            m.serialize_entry("object", v)?;
        }
        if let Some(v) = &f.offset {
            m.serialize_entry("offset", v)?;
        }
        m.end()
    }
}

struct Interp<'a>(&'a Interpreter);

impl Serialize for Interp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &i.name)?;
        if let Some(v) = &i.script {
            m.serialize_entry("script", v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Container, FileId};
    use crate::report::tests::sample_report;
    use crate::stack::Unwind;

    /// A finding with every optional member set, and one with none.
    fn rich() -> Vec<Finding> {
        let mut f = sample_report().findings[0].clone();
        f.container = Some(Container {
            id: "c0ffee".into(),
            name: Some("web".into()),
        });
        f.host_path_unknown = Some("private mount namespace".into());
        f.path_in_process = Some("/data/a".into());
        f.inconclusive = true;
        f.inconclusive_reason = Some("3 events were lost".into());
        f.inode = Some(FileId { dev: 1, ino: 2 });
        f.stack = Some(Arc::new(Stack {
            frames: vec![
                Frame {
                    address: 7,
                    function: Some("save".into()),
                    file: Some("save.c".into()),
                    line: Some(12),
                    object: Some("/usr/bin/app".into()),
                    offset: Some(0x1234),
                    inlined: true,
                },
                Frame {
                    address: 9,
                    ..Frame::default()
                },
            ],
            unwind: Unwind::FramePointers,
            truncated: true,
            interpreter: Some(Interpreter {
                name: "python3".into(),
                script: Some("save.py".into()),
            }),
        }));
        let mut bare = sample_report().findings[1].clone();
        bare.fingerprint = None;
        bare.group = None;
        bare.inode = None;
        bare.process.exe = None;
        bare.process.argv = Arc::from(Vec::new());
        bare.stack = Some(Arc::new(Stack::default()));
        let mut plain = sample_report().findings[2].clone();
        plain.stack = None;
        vec![f, bare, plain]
    }

    #[test]
    fn a_finding_prints_as_its_map_of_values_did() {
        for f in rich() {
            let via_map = serde_json::to_string_pretty(&serde_json::to_value(&f).unwrap()).unwrap();
            let direct = serde_json::to_string_pretty(&Sorted::new(&f)).unwrap();
            assert_eq!(direct, via_map);
            let mut typed = serde_json::to_value(&f).unwrap();
            typed["type"] = "finding".into();
            let line = Sorted {
                finding: &f,
                kind: Some("finding"),
            };
            assert_eq!(serde_json::to_string(&line).unwrap(), typed.to_string());
        }
    }
}
