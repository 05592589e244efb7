//! `auditor crashtest`.

use anyhow::Result;

use crate::{cli::CrashtestArgs, error::UserError};

pub fn run(_args: CrashtestArgs) -> Result<i32> {
    Err(UserError::new("`auditor crashtest` is not available in this build").into())
}
