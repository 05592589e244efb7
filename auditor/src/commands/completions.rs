//! `auditor completions SHELL`: a completion script, made by clap from the
//! same definition as the parser, so it never drifts from the options.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

pub fn run(args: CompletionsArgs) -> Result<i32> {
    let mut out = Vec::new();
    script(args.shell, &mut out);
    crate::output::Output::Stdout(std::io::stdout()).write_chunk(&out)?;
    Ok(0)
}

/// The completion script for `shell`.
fn script(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    clap_complete::generate(shell, &mut Cli::command(), "auditor", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shell_completes_every_command_and_option() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            script(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in [
                "run",
                "record",
                "report",
                "attach",
                "crashtest",
                "baseline",
                "completions",
                "follow-new",
                "max-findings",
                "sarif",
            ] {
                assert!(text.contains(word), "{shell:?} lacks {word}");
            }
        }
    }
}
