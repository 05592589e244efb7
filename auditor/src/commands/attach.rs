//! `auditor attach`.

use anyhow::Result;

use crate::{cli::AttachArgs, error::UserError};

pub fn run(_args: AttachArgs) -> Result<i32> {
    Err(UserError::new("`auditor attach` is not available in this build").into())
}
