//! Probes: raw `sys_enter`/`sys_exit` programs that pick the durability
//! syscalls by number, plus fork, exec, exit and signal tracepoints. A
//! thread without an entry in the per-thread array costs one lookup in the
//! traced-tgid map; runs of writes are counted in the kernel (runs.rs).
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod atomic;
mod crash;
mod emit;
mod kernel;
mod maps;
mod probes;
mod ring;
mod runs;
mod stack;
mod syscalls;
mod thread;
mod visits;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
