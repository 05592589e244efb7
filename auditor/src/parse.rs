//! Durations, sizes and counts from the command line. Every one is parsed
//! with checked integer arithmetic and an upper bound, so no input can
//! overflow into a panic later (`Duration::from_secs_f64`, `Instant + d`,
//! a shift): a bad value is one line naming the fix, exit code 2.

use std::time::Duration;

/// Longest `--duration` taken: long enough for any real attach, short
/// enough that adding it to a clock can never overflow.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// A number with an optional unit (ms, s, m, h, d); a bare number is
/// seconds; up to 9 decimals (`1.5h`, `0.25s`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || String::from("expected a number with a unit, e.g. 30s, 10m, 2h");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return Err(bad()),
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 || frac.contains('.') {
        return Err(bad());
    }
    let too_long = || format!("too long; the longest is {}d", MAX_DURATION_SECS / 86_400);
    // Digits only from here (split above), so a parse failure is overflow.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_long())?
    };
    let frac_digits: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let frac_scale = 10u128.pow(frac.len() as u32);
    let ns = whole
        .checked_mul(unit_ns)
        .and_then(|w| w.checked_add(frac_digits * unit_ns / frac_scale))
        .ok_or_else(too_long)?;
    if ns == 0 {
        return Err(String::from("must be longer than zero"));
    }
    if ns > u128::from(MAX_DURATION_SECS) * 1_000_000_000 {
        return Err(too_long());
    }
    let secs = (ns / 1_000_000_000) as u64;
    Ok(Duration::new(secs, (ns % 1_000_000_000) as u32))
}

/// `300M`, `1G`, `65536K` or plain bytes, at most 1 TiB.
pub fn size(s: &str) -> Result<u64, String> {
    const MAX: u64 = 1 << 40;
    let bad = || String::from("expected a size such as 300M or 1G");
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n <= MAX)
        .ok_or_else(|| String::from("too large; the largest is 1024G"))
}

/// A count of at least 1 (`--max-files`, `--at N`), at most `max`.
pub fn count(s: &str, max: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(String::from("expected a whole number such as 100"));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(String::from("must be at least 1")),
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("too large; the largest is {max}")),
    }
}

/// `--max-files` / `--max-processes`: a count of records kept in memory.
pub fn max_records(s: &str) -> Result<usize, String> {
    // Each record is a few KiB: a billion is far past any host's memory.
    count(s, 1_000_000_000).map(|n| n as usize)
}

/// `--ring-mb`: a power of two between 1 and 1024.
pub fn ring_mb(s: &str) -> Result<u32, String> {
    let n =
        count(s, 1024).map_err(|_| String::from("must be a power of two between 1 and 1024"))?;
    if !n.is_power_of_two() {
        return Err(String::from("must be a power of two between 1 and 1024"));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(
            duration("36500d").unwrap(),
            Duration::from_secs(MAX_DURATION_SECS)
        );
        for bad in [
            "",
            "s",
            ".",
            "10x",
            "-1s",
            "0",
            "0.0s",
            "1.2.3s",
            "1.0000000001s",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for huge in [
            "99999999999999999999h",
            "18446744073709551615s",
            "18446744073709551616",
            "36501d",
            "340282366920938463463374607431768211455d",
            "99999999999999999999999999999999999999999999ms",
        ] {
            let e = duration(huge).unwrap_err();
            assert!(e.contains("too long"), "{huge}: {e}");
        }
    }

    #[test]
    fn sizes_parse_with_suffixes_and_bounds() {
        assert_eq!(size("300M").unwrap(), 300 << 20);
        assert_eq!(size("1g").unwrap(), 1 << 30);
        assert_eq!(size("4096").unwrap(), 4096);
        assert_eq!(size("1024G").unwrap(), 1 << 40);
        for bad in ["big", "", "M", "-1M", "+1M", "1.5G"] {
            assert!(size(bad).unwrap_err().contains("expected a size"), "{bad}");
        }
        for huge in ["99999999999G", "99999999999999999999", "1025G"] {
            assert!(size(huge).unwrap_err().contains("too large"), "{huge}");
        }
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(count("3", 10).unwrap(), 3);
        assert!(count("0", 10).unwrap_err().contains("at least 1"));
        assert!(count("11", 10).unwrap_err().contains("too large"));
        assert!(
            count("99999999999999999999999", 10)
                .unwrap_err()
                .contains("too large")
        );
        assert!(count("-3", 10).is_err());
        assert!(count("3x", 10).is_err());
        assert_eq!(max_records("100000").unwrap(), 100_000);
        assert_eq!(ring_mb("16").unwrap(), 16);
        for bad in ["0", "3", "2048", "99999999999"] {
            assert!(ring_mb(bad).unwrap_err().contains("power of two"), "{bad}");
        }
    }
}
