//! The JSON report (`auditor.report/v1`), documented field by field in
//! docs/report-schema.md.

use std::io::Write;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::{REPORT_SCHEMA, Report};
use crate::calls::signal_name;
use crate::finding::Finding;

/// The report document, serialized member by member in sorted key order
/// (as a `serde_json::Map` would print it); the findings one at a time.
struct Doc<'a> {
    header: Map<String, Value>,
    extra: Map<String, Value>,
    findings: &'a [Finding],
}

/// The findings as the document holds them: keys sorted, as in
/// [`Report::to_json`], written one at a time.
struct Findings<'a>(&'a [Finding]);

impl Serialize for Findings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for f in self.0 {
            seq.serialize_element(&super::sorted::Sorted::new(f))?;
        }
        seq.end()
    }
}

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<&str> = self
            .header
            .keys()
            .chain(self.extra.keys())
            .map(String::as_str)
            .chain(std::iter::once("findings"))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut map = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            if k == "findings" {
                map.serialize_entry(k, &Findings(self.findings))?;
            } else if let Some(v) = self.extra.get(k).or_else(|| self.header.get(k)) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl Report {
    /// Run facts, counts and stats: everything but the findings (shared
    /// with the JSON Lines summary).
    pub(crate) fn header_json(&self) -> serde_json::Map<String, Value> {
        let mut stats = serde_json::to_value(&self.stats).unwrap_or_else(|_| json!({}));
        if let Some(s) = stats.as_object_mut() {
            s.insert("events".into(), self.stats.events.into());
            s.insert("events_captured".into(), self.run.events.into());
            s.insert("dropped".into(), self.dropped().into());
            s.insert("stacks_lost".into(), self.run.stacks_lost.into());
            s.insert("stacks_reused".into(), self.run.stacks_reused.into());
            s.insert(
                "baseline_findings".into(),
                self.left_out.baseline.len().into(),
            );
            s.insert(
                "allowed_findings".into(),
                self.left_out.allowed.len().into(),
            );
        }
        let exit_status = self.run.exit_status.map(|e| {
            json!({
                "code": e.code(),
                "signal": e.signal(),
                "signal_name": e.signal().map(signal_name),
                "description": e.describe(),
            })
        });
        let Value::Object(map) = json!({
            "schema": REPORT_SCHEMA,
            "tool_version": self.run.tool_version,
            "mode": self.run.mode,
            "command": self.run.command,
            "base": self.run.base,
            "exit_status": exit_status,
            "started_at": self.run.started_at,
            "ended_at": self.run.ended_at,
            "complete": self.complete(),
            "truncated_at_byte": self.run.truncated_at_byte,
            "summary": self.summary_line(),
            "counts": self.counts(),
            "stats": stats,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        map
    }

    /// The document [`Report::to_json`] makes, with `extra` members (the
    /// process lives under attach), serialized to `w` as it goes: never
    /// built in memory, which for 50,000 findings was a tree of values
    /// several times the size of the 80 MB of text it printed. In the
    /// report layout ([`super::layout`]), keys in the same sorted order,
    /// byte for byte what laying out `to_json` gives.
    pub fn write_json(
        &self,
        w: &mut dyn std::io::Write,
        extra: Map<String, Value>,
    ) -> std::io::Result<()> {
        let doc = Doc {
            header: self.header_json(),
            extra,
            findings: &self.findings,
        };
        let mut buf = std::io::BufWriter::with_capacity(64 << 10, w);
        super::layout::to_writer(&mut buf, &doc)?;
        buf.write_all(b"\n")?;
        buf.flush()
    }

    /// The whole report as one JSON document.
    pub fn to_json(&self) -> Value {
        let mut map = self.header_json();
        map.insert(
            "findings".into(),
            serde_json::to_value(&self.findings).unwrap_or(Value::Array(Vec::new())),
        );
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample_report;

    #[test]
    fn the_streamed_document_is_the_printed_one() {
        let r = sample_report();
        let mut streamed = Vec::new();
        r.write_json(&mut streamed, serde_json::Map::new()).unwrap();
        let mut printed = crate::report::layout::to_vec(&r.to_json()).unwrap();
        printed.push(b'\n');
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(printed).unwrap()
        );
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let v = sample_report().to_json();
        assert_eq!(v["schema"], "auditor.report/v1");
        assert_eq!(v["tool_version"], "0.1.0");
        assert_eq!(v["mode"], "run");
        assert_eq!(v["command"][1], "--save");
        assert_eq!(v["exit_status"]["code"], 0);
        assert!(v["exit_status"]["signal"].is_null());
        assert_eq!(v["started_at"], "2024-07-01T14:14:56.000Z");
        assert_eq!(v["complete"], true);
        assert_eq!(v["counts"]["total"], 3);
        assert_eq!(v["counts"]["by_severity"]["high"], 1);
        assert_eq!(v["counts"]["by_rule"]["rename-without-fsync"], 1);
        for key in [
            "events",
            "dropped",
            "ignored_files",
            "processes",
            "files_tracked",
            "unknown_fds",
        ] {
            assert!(
                v["stats"].get(key).is_some(),
                "stats.{key} missing: {}",
                v["stats"]
            );
        }
        assert_eq!(v["stats"]["files_tracked"], 2);
        let f = &v["findings"][0];
        assert_eq!(f["rule"], "rename-without-fsync");
        assert_eq!(f["severity"], "high");
        assert_eq!(f["path"], "/d/a");
        assert_eq!(f["inode"]["dev"], 2049);
        assert_eq!(f["inode"]["ino"], 10);
        assert_eq!(f["process"]["pid"], 100);
        assert_eq!(f["process"]["exe"], "/usr/bin/app");
        assert_eq!(f["evidence"]["unsynced_bytes"], 4096);
        assert_eq!(f["inconclusive"], false);
        assert!(f["inconclusive_reason"].is_null());
        let calls = f["calls"].as_array().unwrap();
        assert_eq!(
            calls.last().unwrap()["call"],
            "rename(\"/d/a.tmp\", \"/d/a\") = 0"
        );
        assert!(
            calls
                .iter()
                .any(|c| c["call"] == "write(fd=3, 4096) = 4096")
        );
        for key in ["seq", "ts_ns", "pid", "tid", "comm", "call"] {
            assert!(calls[0].get(key).is_some(), "call.{key} missing");
        }
    }
}
