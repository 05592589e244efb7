//! Recordings: an event stream saved as JSON Lines (header, one event per
//! line, optional trailer), so `report` replays exactly what `run` saw. A
//! recording cut short by a crash still yields every complete event.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::report::ExitStatusInfo;

/// Format id on the header line.
pub const RECORDING_FORMAT: &str = "auditor.recording/v1";

/// First line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingHeader {
    pub format: String,
    pub tool_version: String,
    pub command: Vec<String>,
    pub started_at: String,
}

impl RecordingHeader {
    /// A header in the current format.
    pub fn new(tool_version: &str, command: Vec<String>, started_at: String) -> RecordingHeader {
        RecordingHeader {
            format: RECORDING_FORMAT.into(),
            tool_version: tool_version.into(),
            command,
            started_at,
        }
    }
}

/// Last line of a complete recording: how the run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    pub ended_at: String,
    pub exit_status: Option<ExitStatusInfo>,
    pub dropped: u64,
    pub events: u64,
}

#[derive(Serialize, Deserialize)]
struct TrailerLine {
    trailer: Trailer,
}

/// Writes a recording; buffered. The caller makes the file durable (temp
/// file, fsync, rename, fsync dir) after [`RecordingWriter::finish`].
pub struct RecordingWriter<W: Write> {
    out: BufWriter<W>,
    events: u64,
}

impl<W: Write> RecordingWriter<W> {
    /// Starts a recording of `command` with its header line.
    pub fn new(out: W, command: &[String], started_at: &str) -> io::Result<Self> {
        let header = RecordingHeader::new(
            env!("CARGO_PKG_VERSION"),
            command.to_vec(),
            started_at.to_string(),
        );
        let mut out = BufWriter::new(out);
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(RecordingWriter { out, events: 0 })
    }

    /// Appends one event line.
    pub fn write_event(&mut self, ev: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, ev)?;
        self.out.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the trailer (how the run ended), flushes, and hands back the
    /// writer so the caller can fsync and rename it into place.
    pub fn finish(
        mut self,
        ended_at: &str,
        exit_status: Option<ExitStatusInfo>,
        dropped: u64,
        events: u64,
    ) -> io::Result<W> {
        let trailer = Trailer {
            ended_at: ended_at.to_string(),
            exit_status,
            dropped,
            events,
        };
        serde_json::to_writer(&mut self.out, &TrailerLine { trailer })?;
        self.out.write_all(b"\n")?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Where a recording stops being whole (a crash or kill cut it short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncatedAt {
    /// 1-based line number of the first missing or partial line.
    pub line: u64,
    /// Byte offset where that line starts.
    pub byte_offset: u64,
}

impl fmt::Display for TruncatedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, byte {}", self.line, self.byte_offset)
    }
}

/// A recording read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    pub header: RecordingHeader,
    pub events: Vec<Event>,
    pub trailer: Option<Trailer>,
    /// Set when the trailer is missing or the last line is partial.
    pub truncated_at: Option<TruncatedAt>,
}

/// Reads a recording line by line (for long recordings that should not sit
/// in memory).
pub struct RecordingReader<R: BufRead> {
    input: R,
    name: String,
    header: RecordingHeader,
    line: u64,
    offset: u64,
    trailer: Option<Trailer>,
    truncated_at: Option<TruncatedAt>,
    done: bool,
}

impl RecordingReader<BufReader<File>> {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        RecordingReader::new(BufReader::new(file), &path.display().to_string())
    }
}

impl<R: BufRead> RecordingReader<R> {
    /// Reads the header; `name` is used in messages.
    pub fn new(mut input: R, name: &str) -> Result<Self> {
        let mut first = Vec::new();
        let n = input
            .read_until(b'\n', &mut first)
            .with_context(|| format!("cannot read {name}"))?;
        let header: Option<RecordingHeader> = serde_json::from_slice(&first)
            .ok()
            .filter(|h: &RecordingHeader| h.format == RECORDING_FORMAT);
        let Some(header) = header else {
            bail!(
                "{name} is not an auditor recording (expected a first line with \"format\":\"{RECORDING_FORMAT}\")"
            );
        };
        Ok(RecordingReader {
            input,
            name: name.to_string(),
            header,
            line: 1,
            offset: n as u64,
            trailer: None,
            truncated_at: None,
            done: false,
        })
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// The trailer, once reading reached it.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Where the recording was cut, once reading reached the end.
    pub fn truncated_at(&self) -> Option<TruncatedAt> {
        self.truncated_at
    }

    /// The next event; None at the trailer or the end. A line that does not
    /// parse ends the recording (truncated) unless complete events follow
    /// it, which is corruption and an error.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        while !self.done {
            let start = self.offset;
            let mut buf = Vec::new();
            let n = self
                .input
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read {}", self.name))?;
            if n == 0 {
                self.done = true;
                if self.trailer.is_none() {
                    self.truncated_at = Some(TruncatedAt {
                        line: self.line + 1,
                        byte_offset: start,
                    });
                }
                break;
            }
            self.line += 1;
            self.offset += n as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Ok(ev) = serde_json::from_slice::<Event>(&buf) {
                return Ok(Some(ev));
            }
            if let Ok(t) = serde_json::from_slice::<TrailerLine>(&buf) {
                self.trailer = Some(t.trailer);
                self.done = true;
                break;
            }
            let bad_line = self.line;
            self.done = true;
            self.truncated_at = Some(TruncatedAt {
                line: bad_line,
                byte_offset: start,
            });
            self.ensure_nothing_follows(bad_line)?;
        }
        Ok(None)
    }

    /// After an unreadable line, a crash-cut tail may follow (garbage,
    /// zeros), but not more events.
    fn ensure_nothing_follows(&mut self, bad_line: u64) -> Result<()> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if self.input.read_until(b'\n', &mut buf)? == 0 {
                return Ok(());
            }
            if serde_json::from_slice::<Event>(&buf).is_ok() {
                bail!(
                    "{}: line {bad_line} is not a valid event, but events follow it: the recording is corrupt",
                    self.name
                );
            }
        }
    }
}

/// Reads a whole recording into memory.
pub fn read_recording(path: &Path) -> Result<Recording> {
    let mut reader = RecordingReader::open(path)?;
    let mut events = Vec::new();
    while let Some(ev) = reader.next_event()? {
        events.push(ev);
    }
    Ok(Recording {
        header: reader.header.clone(),
        events,
        trailer: reader.trailer.clone(),
        truncated_at: reader.truncated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("auditor-rec-{}-{name}", std::process::id()))
    }

    fn sample() -> (RecordingHeader, Vec<Event>, Trailer) {
        let header = RecordingHeader::new(
            env!("CARGO_PKG_VERSION"),
            vec!["app".into()],
            "2024-07-01T14:14:56.000Z".into(),
        );
        // A stack and a call that names it: the event's `stack` and the
        // stack event's own fields must not collide.
        let stack = ev(
            1,
            crate::event::EventKind::Stack {
                id: 1,
                user_stack: crate::stack::Stack {
                    frames: vec![crate::stack::Frame {
                        address: 0x1234,
                        function: Some("save".into()),
                        file: Some("/src/a.c".into()),
                        line: Some(3),
                        object: Some("/app".into()),
                        offset: Some(0x34),
                        inlined: false,
                    }],
                    ..Default::default()
                },
            },
        );
        let mut w = write(1, 3, 10);
        w.stack = Some(1);
        let events = number(vec![
            start(1, "/d"),
            open_new(1, "a", 3, reg(5)),
            stack,
            w,
            exit(1, 0),
        ]);
        let trailer = Trailer {
            ended_at: "2024-07-01T14:14:57.000Z".into(),
            exit_status: Some(ExitStatusInfo::Signal(9)),
            dropped: 0,
            events: 5,
        };
        (header, events, trailer)
    }

    fn write_recording(
        header: &RecordingHeader,
        events: &[Event],
        trailer: Option<&Trailer>,
    ) -> Vec<u8> {
        let mut w = RecordingWriter::new(Vec::new(), &header.command, &header.started_at).unwrap();
        for e in events {
            w.write_event(e).unwrap();
        }
        assert_eq!(w.events(), events.len() as u64);
        match trailer {
            Some(t) => w
                .finish(&t.ended_at, t.exit_status, t.dropped, t.events)
                .unwrap(),
            None => w.out.into_inner().unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let (header, events, trailer) = sample();
        let path = temp("round.jsonl");
        std::fs::write(&path, write_recording(&header, &events, Some(&trailer))).unwrap();
        let rec = read_recording(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(rec.header, header);
        assert_eq!(rec.events, events);
        assert_eq!(rec.trailer.as_ref(), Some(&trailer));
        assert_eq!(rec.truncated_at, None);
        let text = String::from_utf8(write_recording(&header, &events, Some(&trailer))).unwrap();
        assert!(
            text.lines()
                .last()
                .unwrap()
                .contains(r#""exit_status":{"signal":9}"#),
            "{text}"
        );
    }

    #[test]
    fn truncated_recordings_yield_their_complete_events() {
        let (header, events, _) = sample();
        let bytes = write_recording(&header, &events, None);
        // Missing trailer only.
        let path = temp("notrailer.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        let rec = read_recording(&path).unwrap();
        assert_eq!(rec.events.len(), events.len());
        assert_eq!(
            rec.truncated_at,
            Some(TruncatedAt {
                line: events.len() as u64 + 2,
                byte_offset: bytes.len() as u64
            })
        );
        assert_eq!(
            rec.truncated_at.unwrap().to_string(),
            format!("line {}, byte {}", events.len() + 2, bytes.len())
        );
        // Partial last line.
        let cut = bytes.len() - 7;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let rec = read_recording(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(rec.events, events[..events.len() - 1]);
        let last_line_start = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap() as u64
            + 1;
        assert_eq!(
            rec.truncated_at,
            Some(TruncatedAt {
                line: events.len() as u64 + 1,
                byte_offset: last_line_start
            })
        );
        assert!(rec.trailer.is_none());
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let (header, events, trailer) = sample();
        let text = String::from_utf8(write_recording(&header, &events, Some(&trailer))).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "{\"garbage";
        let path = temp("corrupt.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let err = read_recording(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("line 3") && err.contains("corrupt"), "{err}");
    }

    #[test]
    fn other_files_are_not_recordings() {
        let path = temp("notes.txt");
        std::fs::write(&path, "hello\n").unwrap();
        let err = read_recording(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            err,
            format!(
                "{} is not an auditor recording (expected a first line with \"format\":\"auditor.recording/v1\")",
                path.display()
            )
        );
    }

    /// Reads `bytes` as a recording to the end (or the first error) and
    /// analyzes what it yields, as `auditor report` does: what comes out
    /// does not matter, only that it returns.
    fn read_all(bytes: &[u8]) {
        let Ok(mut r) = RecordingReader::new(std::io::Cursor::new(bytes), "fuzz") else {
            return;
        };
        let mut n = 0;
        let mut analyzer = crate::Analyzer::new(crate::Config::default()).unwrap();
        while let Ok(Some(mut ev)) = r.next_event() {
            analyzer.process(&mut ev);
            n += 1;
            assert!(n <= bytes.len(), "more events than bytes");
        }
        analyzer.finish();
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn whole() -> Vec<u8> {
            let (header, events, trailer) = sample();
            write_recording(&header, &events, Some(&trailer))
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                read_all(&bytes);
            }

            #[test]
            fn a_valid_header_before_arbitrary_lines_never_panics(
                tail in proptest::collection::vec(any::<u8>(), 0..2048),
            ) {
                let mut bytes = whole();
                let first = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
                bytes.truncate(first);
                bytes.extend_from_slice(&tail);
                read_all(&bytes);
            }

            #[test]
            fn cut_or_corrupted_recordings_never_panic(
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            ) {
                let mut bytes = whole();
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                let end = cut.index(bytes.len() + 1);
                read_all(&bytes[..end]);
            }
        }
    }
}
