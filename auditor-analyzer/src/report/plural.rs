//! Counted words for people: `1 process`, `2 processes`.

/// `n` and the word that goes with it.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular() {
        assert_eq!(super::count(1, "process", "processes"), "1 process");
        assert_eq!(
            super::count(0, "crash point", "crash points"),
            "0 crash points"
        );
        assert_eq!(super::count(2, "file", "files"), "2 files");
    }
}
