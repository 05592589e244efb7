//! Tracking: what the traced processes have open and which data and names
//! are not durable yet. Pure state over events; the rules read it.

pub mod dirs;
pub mod fds;
pub mod inodes;
pub mod paths;
pub mod processes;
pub mod stacks;
pub mod views;
