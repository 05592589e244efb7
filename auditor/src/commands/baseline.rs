//! `auditor baseline -o FILE REPORT`: the fingerprints of a JSON report's
//! findings, for `--baseline` (the format is in [`crate::baseline`]).

use anyhow::Result;

use crate::cli::BaselineArgs;

pub fn run(args: BaselineArgs) -> Result<i32> {
    let n = crate::baseline::write(&args.report, &args.output)?;
    eprintln!(
        "auditor: wrote {} to {}",
        auditor_analyzer::report::plural::count(n as u64, "fingerprint", "fingerprints"),
        args.output.display()
    );
    Ok(0)
}
