//! Editor scratch files that stay local.
//!
//! Vim swap files, vim's `4913` write probe, `~` backups and emacs autosaves and locks are
//! kept in the staging area and never uploaded: on an API without delete an uploaded swap file
//! could never be removed, and on the others it would cost an upload per keystroke burst. The
//! list is a set of simple glob patterns (`*` matches any run of characters, `?` one
//! character), replaceable with `--local-only`.

/// The default patterns, matched against a file's name (not its path).
pub const DEFAULT_PATTERNS: &[&str] =
    &[".*.sw?", ".*.sw??", "4913", "*~", "#*#", ".#*", ".~lock.*#"];

/// Names that are kept local.
#[derive(Clone, Debug)]
pub struct ScratchPatterns {
    patterns: Vec<String>,
}

impl Default for ScratchPatterns {
    fn default() -> Self {
        Self::new(DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect())
    }
}

impl ScratchPatterns {
    /// Uses `patterns` instead of the defaults; an empty list keeps nothing local.
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    /// Whether a file named `name` stays local.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        self.patterns.iter().any(|pattern| {
            let pattern: Vec<char> = pattern.chars().collect();
            glob(&pattern, &name)
        })
    }
}

fn glob(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_scratch_names_are_local() {
        let scratch = ScratchPatterns::default();
        for name in [
            ".notes.txt.swp",
            ".x.swo",
            ".a.swpx",
            "4913",
            "notes.txt~",
            "#notes#",
            ".#notes",
        ] {
            assert!(scratch.matches(name), "{name}");
        }
        for name in ["notes.txt", "swap.swp", "4914", "a#b", "report.pdf"] {
            assert!(!scratch.matches(name), "{name}");
        }
        assert!(!ScratchPatterns::new(vec![]).matches("4913"));
    }
}
