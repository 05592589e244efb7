//! `auditor man`: the manual page, made by clap from the same definition
//! as the parser (options by heading, the examples and environment of each
//! command); `--dir` writes one page per command, the way files are
//! written here (atomically, 0600).

use std::path::Path;

use anyhow::Result;
use clap::CommandFactory;

use crate::{
    cli::{Cli, ManArgs},
    error::UserError,
    output::Output,
};

pub fn run(args: ManArgs) -> Result<i32> {
    let pages = pages()?;
    match &args.dir {
        None => Output::Stdout(std::io::stdout()).write_chunk(&pages[0].1)?,
        Some(dir) => {
            for (name, page) in &pages {
                write(&dir.join(name), page)?;
            }
            eprintln!(
                "auditor: wrote {} to {} (mode 0600: chmod 644 to share them)",
                auditor_analyzer::report::plural::count(pages.len() as u64, "page", "pages"),
                dir.display()
            );
        }
    }
    Ok(0)
}

/// `auditor.1` first, then `auditor-run.1` and the other commands'.
fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
        let man = clap_mangen::Man::new(c.clone());
        let mut page = Vec::new();
        man.render(&mut page)?;
        out.push((man.get_filename(), page));
    }
    Ok(out)
}

fn write(path: &Path, page: &[u8]) -> Result<(), UserError> {
    let cannot =
        |e: std::io::Error| UserError::new(format!("cannot write {}: {e}", path.display()));
    let mut out = Output::open(Some(path))?;
    out.write_chunk(page).map_err(cannot)?;
    out.commit().map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_command_with_its_options_and_examples() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "auditor.1",
                "auditor-run.1",
                "auditor-record.1",
                "auditor-report.1",
                "auditor-attach.1",
                "auditor-crashtest.1",
                "auditor-baseline.1",
                "auditor-completions.1",
                "auditor-man.1"
            ]
        );
        let main = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(
            main.starts_with(".ie") || main.contains(".TH auditor 1"),
            "{main}"
        );
        for word in [
            "auditor\\-run(1)",
            "auditor\\-baseline(1)",
            "NO_COLOR",
            "AUDITOR_CRASH_DIR",
        ] {
            assert!(main.contains(word), "auditor.1 lacks {word}:\n{main}");
        }
        let attach = String::from_utf8(pages[4].1.clone()).unwrap();
        for word in [
            ".SH TARGETS",
            ".SH REPORT",
            "\\-p",
            "\\-\\-follow\\-new",
            "Examples:",
        ] {
            assert!(
                attach.contains(word),
                "auditor-attach.1 lacks {word}:\n{attach}"
            );
        }
    }
}
