//! Live capture: probes in the kernel, records out of the ring buffer,
//! decoded into [`auditor_analyzer::event::Event`]s.

pub mod btf;
pub mod decode;
#[cfg(test)]
mod decode_fuzz;
pub mod enrich;
mod images;
mod kdev;
pub mod launch;
pub mod maps;
pub mod mountinfo;
pub mod preflight;
pub mod probes;
pub mod procfs;
pub mod pump;
pub mod stacks;
pub mod views;
