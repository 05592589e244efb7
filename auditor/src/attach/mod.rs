//! What `auditor attach` needs besides the probes: finding the processes to
//! watch in /proc (by pid, name or cgroup), reading what they already had
//! open, resolving cgroups and container ids, and serving metrics while it
//! runs.

pub mod cgroup;
pub mod lives;
pub mod metrics;
pub mod targets;

/// Hands the memory an eviction pass freed back to the system. glibc keeps
/// freed chunks for reuse and only returns the top of the heap; under the
/// churn of a long attach (file states made and dropped by the thousand)
/// a few live allocations pin the top, so freed pages below would stay
/// resident and the footprint would creep up over days.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
