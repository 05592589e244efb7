//! What `auditor attach` needs besides the probes: finding the processes to
//! watch in /proc (by pid, name or cgroup), reading what they already had
//! open, resolving cgroups and container ids, and serving metrics while it
//! runs.

pub mod cgroup;
pub mod lives;
pub mod metrics;
pub mod targets;

use std::time::Duration;

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

use crate::error::UserError;

/// Parses `--duration`: a number with an optional unit (ms, s, m, h, d);
/// a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UserError> {
    let bad = || {
        UserError::new(format!(
            "--duration {s:?}: expected a number with a unit, e.g. 30s, 10m, 2h"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "s", "10x", "-1s", "0"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
