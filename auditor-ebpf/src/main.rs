//! Probes: generic syscall enter/exit programs attached to each durability
//! relevant `syscalls:sys_{enter,exit}_*` tracepoint, plus fork, exec, exit
//! and signal tracepoints. Only tasks whose tgid is in `TRACED` cost more than
//! one map lookup.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod crash;
mod emit;
mod kernel;
mod maps;
mod probes;
mod runs;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
