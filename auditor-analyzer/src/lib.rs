//! The analyzer: a pure library over event sequences. It needs no root and no
//! kernel, so every rule is tested on hand-written or recorded events, and the
//! same code serves live capture, recordings and the terminal UI.
//!
//! Feed [`Event`]s to an [`Analyzer`], call [`Analyzer::finish`] at the end,
//! build a [`Report`] and render it (text, JSON, JSON Lines).

mod analyzer;
pub mod calls;
pub mod config;
pub mod event;
pub mod exposure;
mod fast_hash;
mod file_id;
pub mod finding;
mod glob;
pub mod image;
mod locate;
pub mod recording;
pub mod report;
pub mod rules;
pub mod snapshot;
pub mod stack;
pub mod stats;
pub mod time;
mod track;

pub use track::{paths, views};

#[cfg(test)]
mod test_support;

pub use analyzer::Analyzer;
pub use config::Config;
pub use event::{Event, EventKind, FileId, FileInfo, FileType};
pub use finding::{CallRef, Finding, ProcessRef, Severity};
pub use recording::{
    Recording, RecordingHeader, RecordingReader, RecordingWriter, Trailer, TruncatedAt,
    read_recording,
};
pub use report::{
    ExitStatusInfo, Report, RunInfo, jsonl_at_risk_line, jsonl_finding_line, jsonl_summary_line,
};
pub use stats::AnalyzerStats;
pub use time::{now_rfc3339, rfc3339};
