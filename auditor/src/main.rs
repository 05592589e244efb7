//! `auditor`: watches programs through eBPF and reports where a crash or
//! power loss would lose or corrupt their data.

mod attach;
mod baseline;
mod capture;
mod cli;
mod commands;
mod config_file;
mod crashtest;
mod error;
mod output;
mod parse;
mod pipeline;
mod private;
#[cfg(test)]
mod test_support;
mod timings;
mod tui;

use auditor_analyzer::report::groups::escape;
use clap::{Parser, error::ErrorKind};

/// A bad value (a number out of range, a malformed duration) is one line
/// naming the option and the fix, like every other error of ours; help,
/// version and usage errors are clap's own.
fn usage_error(e: clap::Error) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        // The first paragraph: the error and the values clap would accept.
        let text = e.render().to_string();
        let first: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let line = first.join(" ");
        eprintln!(
            "auditor: {}",
            escape(line.strip_prefix("error: ").unwrap_or(&line))
        );
        std::process::exit(2);
    }
    e.exit()
}

fn main() {
    let started = std::time::Instant::now();
    let cli = cli::Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    if cli.command.timings() {
        timings::enable(started);
    }
    let result = match cli.command {
        cli::Command::Run(a) => commands::run::run(a),
        cli::Command::Record(a) => commands::record::run(a),
        cli::Command::Report(a) => commands::report::run(a),
        cli::Command::Attach(a) => commands::attach::run(a),
        cli::Command::Crashtest(a) => commands::crashtest::run(a),
        cli::Command::Baseline(a) => commands::baseline::run(a),
        cli::Command::Completions(a) => commands::completions::run(a),
        cli::Command::Man(a) => commands::man::run(a),
    };
    match result {
        Ok(code) => {
            timings::print();
            std::process::exit(code)
        }
        Err(e) => {
            // One line, prefixed with our name; user errors carry their fix.
            match e.downcast_ref::<error::UserError>() {
                // What the user typed or a program named goes into some
                // messages: never raw to the terminal.
                Some(u) => eprintln!("auditor: {}", escape(&u.to_string())),
                None => eprintln!("auditor: {}", escape(&format!("{e:#}").replace('\n', " "))),
            }
            std::process::exit(2);
        }
    }
}
