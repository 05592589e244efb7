//! The layout of JSON reports: indented like `serde_json`'s pretty printer,
//! except that a record (a call, a stack frame, a writer) and a list of
//! plain values (argv, pids, byte ranges) each take one line. A report of
//! 50,000 findings with stacks was a quarter smaller this way (215 -> 164
//! MB), and writing it out was most of the time the report took; a stack
//! or a call list reads line by line, as in an strace log.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// Objects this deep or deeper (the document itself is depth 1) take one
/// line: in a report, a finding's calls and stack frames.
const RECORD_DEPTH: usize = 5;

/// Serializes `value` to `w` in the report layout.
pub fn to_writer<W: Write, T: Serialize + ?Sized>(w: W, value: &T) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(w, Layout::default());
    value.serialize(&mut ser).map_err(io::Error::other)
}

/// `value` in the report layout.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    to_writer(&mut out, value)?;
    Ok(out)
}

/// One open object or array.
struct Open {
    /// On one line (it, or a container it is in, is a record).
    inline: bool,
    has_value: bool,
}

#[derive(Default)]
struct Layout {
    open: Vec<Open>,
    /// An array waits for its first value to choose its layout: one line
    /// unless that value is an object.
    undecided: bool,
}

impl Layout {
    fn inline(&self) -> bool {
        self.open.last().is_some_and(|o| o.inline)
    }

    fn indent<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        for _ in 0..self.open.len() {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// A value starts; `object` says whether it is an object. Settles the
    /// layout of an array waiting for its first value.
    fn value<W: ?Sized + Write>(&mut self, w: &mut W, object: bool) -> io::Result<()> {
        if !std::mem::take(&mut self.undecided) {
            return Ok(());
        }
        if object {
            w.write_all(b"\n")?;
            self.indent(w)
        } else {
            if let Some(o) = self.open.last_mut() {
                o.inline = true;
            }
            Ok(())
        }
    }

    fn open<W: ?Sized + Write>(&mut self, w: &mut W, inline: bool, start: &[u8]) -> io::Result<()> {
        self.open.push(Open {
            inline,
            has_value: false,
        });
        w.write_all(start)
    }

    fn has_value(&mut self) {
        if let Some(o) = self.open.last_mut() {
            o.has_value = true;
        }
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, end: &[u8]) -> io::Result<()> {
        // An empty array was still waiting: `[]`.
        self.undecided = false;
        if let Some(o) = self.open.pop()
            && !o.inline
            && o.has_value
        {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        w.write_all(end)
    }

    fn next<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if self.inline() {
            if !first {
                w.write_all(b", ")?;
            }
            return Ok(());
        }
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(w)
    }
}

/// Scalars settle a waiting array, then print as `serde_json` prints them.
macro_rules! scalars {
    ($($name:ident($t:ty)),* $(,)?) => {$(
        fn $name<W: ?Sized + Write>(&mut self, w: &mut W, v: $t) -> io::Result<()> {
            self.value(w, false)?;
            serde_json::ser::CompactFormatter.$name(w, v)
        }
    )*};
}

impl Formatter for Layout {
    scalars!(
        write_bool(bool),
        write_i8(i8),
        write_i16(i16),
        write_i32(i32),
        write_i64(i64),
        write_i128(i128),
        write_u8(u8),
        write_u16(u16),
        write_u32(u32),
        write_u64(u64),
        write_u128(u128),
        write_f32(f32),
        write_f64(f64),
        write_number_str(&str),
        write_byte_array(&[u8]),
        write_raw_fragment(&str),
    );

    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value(w, false)?;
        w.write_all(b"null")
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value(w, false)?;
        w.write_all(b"\"")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value(w, false)?;
        self.open(w, self.inline(), b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first && !self.inline() {
            self.undecided = true;
            return Ok(());
        }
        self.next(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value();
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value(w, true)?;
        let inline = self.inline() || self.open.len() + 1 >= RECORD_DEPTH;
        self.open(w, inline, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.next(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    fn laid_out(v: &Value) -> String {
        String::from_utf8(super::to_vec(v).unwrap()).unwrap()
    }

    #[test]
    fn records_and_lists_of_values_take_one_line_each() {
        let doc = json!({
            "command": ["sh", "-c", "x"],
            "empty": [],
            "none": {},
            "findings": [{
                "calls": [
                    {"call": "write(fd=3, 1) = 1", "seq": 1},
                    {"call": "exit_group(0)", "seq": 2, "frames": [{"a": 1}]},
                ],
                "evidence": {"ranges": [[0, 100], [200, 300]], "pids": [7], "x": null, "ok": true, "f": 1.5},
                "inode": {"dev": 1, "ino": 2},
            }],
        });
        let want = r#"{
  "command": ["sh", "-c", "x"],
  "empty": [],
  "findings": [
    {
      "calls": [
        {"call": "write(fd=3, 1) = 1", "seq": 1},
        {"call": "exit_group(0)", "frames": [{"a": 1}], "seq": 2}
      ],
      "evidence": {
        "f": 1.5,
        "ok": true,
        "pids": [7],
        "ranges": [[0, 100], [200, 300]],
        "x": null
      },
      "inode": {
        "dev": 1,
        "ino": 2
      }
    }
  ],
  "none": {}
}"#;
        assert_eq!(laid_out(&doc), want);
    }

    #[test]
    fn the_layout_parses_back_to_the_same_value() {
        let doc = json!({
            "a": [[], [[]], [{}], [1, [2, {"b": [3]}]], "s\"\n\u{1b}"],
            "deep": {"x": {"y": {"z": {"w": {"v": [{"u": 1}]}}}}},
            "n": [-1, 18446744073709551615u64, 0.25],
        });
        let text = laid_out(&doc);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
