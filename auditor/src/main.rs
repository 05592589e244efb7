//! `auditor`: watches programs through eBPF and reports where a crash or
//! power loss would lose or corrupt their data.

mod attach;
mod capture;
mod cli;
mod commands;
mod crashtest;
mod error;
mod output;
mod pipeline;
mod tui;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(a) => commands::run::run(a),
        cli::Command::Record(a) => commands::record::run(a),
        cli::Command::Report(a) => commands::report::run(a),
        cli::Command::Attach(a) => commands::attach::run(a),
        cli::Command::Crashtest(a) => commands::crashtest::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line, prefixed with our name; user errors carry their fix.
            match e.downcast_ref::<error::UserError>() {
                Some(u) => eprintln!("auditor: {u}"),
                None => eprintln!("auditor: {}", format!("{e:#}").replace('\n', " ")),
            }
            std::process::exit(2);
        }
    }
}
