//! A small glob matcher for `--ignore` patterns, so the analyzer needs no
//! extra dependency. `*` and `?` stay within one path component, `**` crosses
//! components, `[a-z]`/`[!a-z]` are classes, `\` escapes. A pattern without
//! `/` matches the file name alone (as in .gitignore), so `*.log` ignores
//! every log file.

use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    AnyChar,
    /// `*`
    Star,
    /// `**`
    DoubleStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled ignore pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    tokens: Vec<Token>,
    basename_only: bool,
}

impl Glob {
    /// Compiles `pattern`; a malformed one is an error naming it, so a typo
    /// on the command line does not silently ignore nothing.
    pub fn new(pattern: &str) -> Result<Glob> {
        if pattern.is_empty() {
            bail!("invalid ignore glob ``: empty pattern");
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    tokens.push(Token::DoubleStar);
                    i += 2;
                    // `**/` also matches zero directories.
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    continue;
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyChar),
                '\\' => {
                    i += 1;
                    let Some(&c) = chars.get(i) else {
                        bail!("invalid ignore glob `{pattern}`: dangling `\\` at the end");
                    };
                    tokens.push(Token::Literal(c));
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i).ok_or_else(|| {
                        anyhow::anyhow!("invalid ignore glob `{pattern}`: unclosed `[`")
                    })?;
                    tokens.push(token);
                    i = next;
                    continue;
                }
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Ok(Glob {
            tokens,
            basename_only: !pattern.contains('/'),
        })
    }

    /// Whether `path` is ignored by this pattern.
    pub fn is_match(&self, path: &str) -> bool {
        let subject = if self.basename_only {
            path.rsplit('/').next().unwrap_or(path)
        } else {
            path
        };
        let chars: Vec<char> = subject.chars().collect();
        match_tokens(&self.tokens, &chars)
    }
}

/// Parses `[...]` starting at `start`; returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match token {
        Token::Literal(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::AnyChar => s.first().is_some_and(|&c| c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first().is_some_and(|&c| {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }) && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            for skip in 0..=s.len() {
                if match_tokens(rest, &s[skip..]) {
                    return true;
                }
                if s.get(skip) == Some(&'/') {
                    return false;
                }
            }
            false
        }
        Token::DoubleStar => (0..=s.len()).any(|skip| match_tokens(rest, &s[skip..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_classes() {
        let g = Glob::new("/var/lib/*/db").unwrap();
        assert!(g.is_match("/var/lib/app/db"));
        assert!(!g.is_match("/var/lib/a/b/db"));
        let g = Glob::new("/var/**/db").unwrap();
        assert!(g.is_match("/var/lib/a/b/db"));
        assert!(g.is_match("/var/db"));
        let g = Glob::new("/d/file[0-9].?x").unwrap();
        assert!(g.is_match("/d/file7.tx"));
        assert!(!g.is_match("/d/filea.tx"));
        assert!(Glob::new("/d/[!a]").unwrap().is_match("/d/b"));
    }

    #[test]
    fn patterns_without_slash_match_the_file_name() {
        let g = Glob::new("*.log").unwrap();
        assert!(g.is_match("/var/log/app/x.log"));
        assert!(!g.is_match("/var/log/app/x.db"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        let err = Glob::new("/d/[ab").unwrap_err().to_string();
        assert!(
            err.contains("unclosed `[`") && err.contains("/d/[ab"),
            "{err}"
        );
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a\\").is_err());
    }
}
