//! `auditor crashtest -- CMD`: prove findings with real power cuts on a
//! scratch filesystem (the work is in [`crate::crashtest`]).

use anyhow::Result;

use crate::cli::CrashtestArgs;

pub fn run(args: CrashtestArgs) -> Result<i32> {
    crate::crashtest::run(args)
}
