//! Errors a user can fix: printed as one line naming the fix, exit code 2.

use std::fmt;

/// A problem with the input or the host, not a bug of ours.
#[derive(Debug)]
pub struct UserError(String);

impl UserError {
    pub fn new(msg: impl Into<String>) -> Self {
        UserError(msg.into())
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}
