//! One module per subcommand: each parses its arguments, runs the pipeline
//! and chooses where events and the report go; each returns the exit code.

pub mod attach;
pub mod baseline;
pub mod completions;
pub mod crashtest;
pub mod man;
pub mod record;
pub mod report;
pub mod run;
