//! Reversible name encoding between local paths and remote object names.
//!
//! Servers rewrite some characters (Mix turns whitespace into `_`, replaces every `.` but the
//! last and collapses runs of `_`), and every API keeps names flat. So a local path such as
//! `src/my file.tar.gz` is stored under a name the server leaves alone, and decoding the stored
//! name gives the exact path back:
//!
//! * `/` (nested directories) becomes `／`, `"` becomes `＂`, `\` becomes `＼`, and control
//!   characters become their Control Pictures (`␀`…`␟`, `␡`); always, on every API.
//! * Per [`NameRules`]: a space becomes `␠` and other whitespace `‛` + 4 hex digits; every `.`
//!   but the last becomes `．`; the second and later `_` of a run become `＿`.
//! * A literal substitute character (or the escape `‛` itself) in a local name is written as
//!   `‛` followed by that character, so decoding never confuses the two.
//!
//! [`decode`] does not depend on the rules, so a listing can be decoded without knowing how it
//! was written. Names that other clients stored without this encoding decode to themselves
//! (apart from the rare substitute characters).

use std::time::SystemTime;

use super::NameRules;

/// Escape that marks the next character as literal, or starts a `‛XXXX` code point.
pub(crate) const ESCAPE: char = '\u{201B}';
/// Substitute for `/`, the separator of nested paths inside one flat remote namespace.
pub(crate) const SLASH: char = '\u{FF0F}';
const QUOTE: char = '\u{FF02}';
const BACKSLASH: char = '\u{FF3C}';
const SPACE: char = '\u{2420}';
const DOT: char = '\u{FF0E}';
const UNDERSCORE: char = '\u{FF3F}';
const DELETE: char = '\u{2421}';
const CONTROL_PICTURES: std::ops::RangeInclusive<u32> = 0x2400..=0x241F;
/// Appended (unescaped) to the stored name of a symbolic link, whose content is its target.
const LINK_MARK: char = '\u{21AA}';

/// Longest local name component, as on most Linux filesystems.
pub const NAME_MAX_BYTES: usize = 255;

/// The substitute for `c` that is applied on every API, if any.
fn always_substitute(c: char) -> Option<char> {
    match c {
        '/' => Some(SLASH),
        '"' => Some(QUOTE),
        '\\' => Some(BACKSLASH),
        '\u{7F}' => Some(DELETE),
        c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32),
        _ => None,
    }
}

/// The original of a substitute character, if `c` is one.
fn original_of(c: char) -> Option<char> {
    match c {
        SLASH => Some('/'),
        QUOTE => Some('"'),
        BACKSLASH => Some('\\'),
        DELETE => Some('\u{7F}'),
        SPACE => Some(' '),
        DOT => Some('.'),
        UNDERSCORE => Some('_'),
        c if CONTROL_PICTURES.contains(&(c as u32)) => char::from_u32(c as u32 - 0x2400),
        _ => None,
    }
}

/// Whitespace as Go's `unicode.IsSpace` sees it (what the Mix server rewrites).
fn is_go_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// Encodes a local path (components joined by `/`) into a name the server stores unchanged.
pub fn encode(path: &str, rules: &NameRules) -> String {
    let last_dot = path.rfind('.');
    let mut out = String::with_capacity(path.len() + 8);
    let mut previous_was_underscore = false;
    for (index, c) in path.char_indices() {
        let underscore_run = c == '_' && previous_was_underscore;
        previous_was_underscore = c == '_';
        if c == ESCAPE || c == LINK_MARK || original_of(c).is_some() {
            out.push(ESCAPE);
            out.push(c);
        } else if let Some(sub) = always_substitute(c) {
            out.push(sub);
        } else if rules.rewrites_whitespace && c == ' ' {
            out.push(SPACE);
        } else if rules.rewrites_whitespace && is_go_space(c) {
            out.push(ESCAPE);
            out.push_str(&format!("{:04X}", c as u32));
        } else if rules.rewrites_inner_dots && c == '.' && Some(index) != last_dot {
            out.push(DOT);
        } else if rules.collapses_underscores && underscore_run {
            out.push(UNDERSCORE);
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes a stored name back into the local path it encodes.
pub fn decode(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ESCAPE {
            if let Some(&next) = chars.get(i + 1)
                && (next == ESCAPE || next == LINK_MARK || original_of(next).is_some())
            {
                out.push(next);
                i += 2;
                continue;
            }
            if let Some(code) = chars
                .get(i + 1..i + 5)
                .map(|hex| hex.iter().collect::<String>())
                .and_then(|hex| u32::from_str_radix(&hex, 16).ok())
                .and_then(char::from_u32)
            {
                out.push(code);
                i += 5;
                continue;
            }
            out.push(c);
        } else {
            out.push(original_of(c).unwrap_or(c));
        }
        i += 1;
    }
    out
}

/// The stored name of a symbolic link at `path`: the encoded path and an unescaped `↪`.
pub fn encode_link(path: &str, rules: &NameRules) -> String {
    let mut name = encode(path, rules);
    name.push(LINK_MARK);
    name
}

/// If `name` is the stored name of a symbolic link, the stored name of its path.
pub fn strip_link_mark(name: &str) -> Option<&str> {
    let base = name.strip_suffix(LINK_MARK)?;
    // The mark is escaped when an odd number of escapes stands right before it.
    let escapes = base.chars().rev().take_while(|&c| c == ESCAPE).count();
    (escapes % 2 == 0).then_some(base)
}

/// Turns a container title into a directory name: `/` and NUL cannot appear in a name, a bare
/// `.` or `..` cannot name a directory, and names are cut at [`NAME_MAX_BYTES`].
pub fn dir_name_from_title(title: &str) -> String {
    let mut name = String::with_capacity(title.len());
    for c in title.chars() {
        let c = match c {
            '/' => SLASH,
            '\0' => '\u{2400}',
            c => c,
        };
        if name.len() + c.len_utf8() > NAME_MAX_BYTES {
            break;
        }
        name.push(c);
    }
    match name.as_str() {
        "" => "\u{2400}".to_string(),
        "." | ".." => name.replace('.', &DOT.to_string()),
        _ => name,
    }
}

/// The container title to create for a directory name (the inverse of [`dir_name_from_title`]).
pub fn title_from_dir_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == SLASH { '/' } else { c })
        .collect()
}

/// One candidate for a name shared by several remote objects.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The name every candidate wants.
    pub name: String,
    /// Remote id, whose first characters make the suffix.
    pub id: String,
    /// Order key: by default the newest keeps the plain name.
    pub time: SystemTime,
}

/// Which of several objects wanting one name keeps it plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    /// Files: the newest object is the one a user means by the name.
    Newest,
    /// Directories: the oldest keeps its name so paths do not move when another appears.
    Oldest,
}

/// Gives every candidate a unique name: the winner keeps its name, the others become
/// `stem~<short id>.ext`. Stable: the same set of objects always gets the same names.
pub fn disambiguate(candidates: &[Candidate], winner: Winner) -> Vec<String> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&candidates[a], &candidates[b]);
        let by_time = match winner {
            Winner::Newest => y.time.cmp(&x.time),
            Winner::Oldest => x.time.cmp(&y.time),
        };
        x.name
            .cmp(&y.name)
            .then(by_time)
            .then_with(|| x.id.cmp(&y.id))
    });
    let mut names = vec![String::new(); candidates.len()];
    let mut taken = std::collections::HashSet::new();
    for (rank, &index) in order.iter().enumerate() {
        let candidate = &candidates[index];
        let first_of_name = rank == 0 || candidates[order[rank - 1]].name != candidate.name;
        names[index] = if first_of_name {
            candidate.name.clone()
        } else {
            with_suffix(&candidate.name, &short_id(&candidate.id))
        };
    }
    // A suffixed name may itself collide with a plain one; keep lengthening until unique.
    for index in order {
        let mut name = names[index].clone();
        let mut extra = 0;
        while !taken.insert(name.clone()) {
            extra += 1;
            name = with_suffix(
                &candidates[index].name,
                &format!("{}{extra}", short_id(&candidates[index].id)),
            );
        }
        names[index] = name;
    }
    names
}

fn short_id(id: &str) -> String {
    // Ids often carry a type prefix (`fil_...`): the part after it tells objects apart.
    let core = id.rsplit('_').next().unwrap_or(id);
    let clean: String = core.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if core.contains('-') {
        // A UUID: its first group, as people abbreviate them.
        clean.chars().take(8).collect()
    } else {
        clean[clean.len().saturating_sub(8)..].to_string()
    }
}

/// `report.pdf` + `ab12` → `report~ab12.pdf`; a name without extension gets the suffix at the end.
fn with_suffix(name: &str, suffix: &str) -> String {
    let (dir, file) = match name.rfind('/') {
        Some(slash) => name.split_at(slash + 1),
        None => ("", name),
    };
    match file.rfind('.') {
        Some(dot) if dot > 0 => format!("{dir}{}~{suffix}{}", &file[..dot], &file[dot..]),
        _ => format!("{dir}{file}~{suffix}"),
    }
}

/// Checks that `name` can be a local name component.
pub fn valid_component(name: &str) -> bool {
    unshowable(name).is_none()
}

/// Why `name` cannot be a local name component as it is, if it cannot.
pub fn unshowable(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is . or ..")
    } else if name.contains('/') {
        Some("it holds a /")
    } else if name.contains('\0') {
        Some("it holds a NUL")
    } else if name.len() > NAME_MAX_BYTES {
        Some("it is longer than 255 bytes")
    } else {
        None
    }
}

/// Remote names logged at most: past it, one line says the rest go unlogged.
pub const SUBSTITUTES_LOGGED: usize = 1024;

/// Remembers which remote names were logged as shown under a substitute, so each is logged
/// once however often its listing is fetched again (at most [`SUBSTITUTES_LOGGED`] of them).
#[derive(Debug, Default)]
pub struct SubstituteLog {
    logged: std::collections::HashSet<String>,
    full: bool,
}

impl SubstituteLog {
    /// Logs, the first time only, that the server's `remote` name shows as `local` because of
    /// `why`.
    pub fn note(&mut self, remote: &str, local: &str, why: &str) {
        if self.full || self.logged.contains(remote) {
            return;
        }
        if self.logged.len() >= SUBSTITUTES_LOGGED {
            self.full = true;
            log::warn!(
                "more than {SUBSTITUTES_LOGGED} names on the server cannot be shown as they \
                 are; the others show under substitutes too, without a log line each"
            );
            return;
        }
        self.logged.insert(remote.to_owned());
        log::warn!(
            "the server holds the name {remote:?}, which a local file name cannot be ({why}); \
             it shows as {local:?}. Rename it on the server (or with another client) to see \
             it under its own name"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIX: NameRules = NameRules {
        rewrites_whitespace: true,
        rewrites_inner_dots: true,
        collapses_underscores: true,
        max_name_bytes: None,
    };

    /// What the Mix server does to an uploaded name (the emulator's rules, restated).
    fn mix_sanitize(name: &str) -> String {
        let spaced: String = name
            .chars()
            .map(|c| if is_go_space(c) { '_' } else { c })
            .collect();
        let dotted = match spaced.rfind('.') {
            Some(last) if last > 0 => {
                let (head, tail) = spaced.split_at(last);
                format!("{}{tail}", head.replace('.', "_"))
            }
            _ => spaced,
        };
        let mut out = String::new();
        for c in dotted.chars() {
            if !(c == '_' && out.ends_with('_')) {
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any path round-trips through encode and decode under every backend's rules, the
        /// stored name never holds a `/`, and Mix's sanitiser leaves it unchanged.
        #[test]
        fn any_name_round_trips_under_every_backends_rules(path in "\\PC{0,40}(/\\PC{1,20}){0,3}") {
            let flat = NameRules::default();
            let limited = NameRules { max_name_bytes: Some(255), ..NameRules::default() };
            for rules in [MIX, flat, limited] {
                let encoded = encode(&path, &rules);
                proptest::prop_assert!(!encoded.contains('/'), "{:?} keeps a slash", encoded);
                proptest::prop_assert_eq!(decode(&encoded), path.clone());
            }
            let encoded = encode(&path, &MIX);
            proptest::prop_assert_eq!(mix_sanitize(&encoded), encoded);
        }
    }

    #[test]
    fn round_trips_and_survives_mix_sanitising() {
        let names = [
            "plain.txt",
            "my file.tar.gz",
            "a  b__c___d.e.f",
            ".env",
            ".config.json",
            "tab\tnew\nline",
            "nbsp\u{a0}ideo\u{3000}x",
            "quote\"back\\slash",
            "dir/sub dir/file.name.txt",
            "already␠has．subs＿and‛escape",
            "ünïcödé 文件.md",
            "trailing.",
            "x_",
            "__init__.py",
            "‛0041 looks like a code",
        ];
        for name in names {
            let encoded = encode(name, &MIX);
            assert_eq!(
                mix_sanitize(&encoded),
                encoded,
                "server rewrites {encoded:?}"
            );
            assert!(!encoded.contains('/'), "{encoded:?} keeps a slash");
            assert_eq!(
                decode(&encoded),
                name,
                "round trip of {name:?} via {encoded:?}"
            );
        }
    }

    #[test]
    fn link_names_are_told_apart_from_file_names() {
        let link = encode_link("dir/to x", &MIX);
        assert_eq!(
            strip_link_mark(&link).map(decode).as_deref(),
            Some("dir/to x")
        );
        for name in ["ends with ↪", "‛", "x‛↪"] {
            let file = encode(name, &MIX);
            assert_eq!(strip_link_mark(&file), None, "{file:?}");
            assert_eq!(decode(&file), name);
            let link = encode_link(name, &MIX);
            assert_eq!(strip_link_mark(&link).map(decode).as_deref(), Some(name));
        }
    }

    #[test]
    fn plain_names_are_stored_as_they_are() {
        assert_eq!(encode("report.pdf", &MIX), "report.pdf");
        assert_eq!(encode("my file.txt", &NameRules::default()), "my file.txt");
        assert_eq!(decode("report_final.pdf"), "report_final.pdf");
    }

    #[test]
    fn titles_become_directory_names_and_back() {
        for title in ["a/b", "plain", "x／y", "tab\tx"] {
            let dir = dir_name_from_title(title);
            assert!(valid_component(&dir), "{dir:?}");
        }
        assert_eq!(dir_name_from_title("a/b"), "a／b");
        assert_eq!(title_from_dir_name("a／b"), "a/b");
        assert_eq!(dir_name_from_title(".."), "．．");
    }

    #[test]
    fn names_no_local_file_can_have_are_told_why_and_logged_once() {
        assert_eq!(unshowable("ok.txt"), None);
        assert_eq!(unshowable("new\nline"), None);
        for bad in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            assert!(unshowable(bad).is_some(), "{bad:?}");
        }
        let mut log = SubstituteLog::default();
        log.note("..", "．．", "it is . or ..");
        log.note("..", "．．", "it is . or ..");
        assert_eq!(log.logged.len(), 1, "once per name");
        for i in 0..SUBSTITUTES_LOGGED + 10 {
            log.note(&format!("{i}\0"), &format!("{i}␀"), "it holds a NUL");
        }
        assert_eq!(log.logged.len(), SUBSTITUTES_LOGGED, "bounded");
        assert!(log.full);
    }

    #[test]
    fn duplicates_get_stable_suffixes() {
        let t = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let candidates = vec![
            Candidate {
                name: "r.pdf".into(),
                id: "fil_old111".into(),
                time: t(1),
            },
            Candidate {
                name: "r.pdf".into(),
                id: "fil_new222".into(),
                time: t(2),
            },
            Candidate {
                name: "x".into(),
                id: "fil_x".into(),
                time: t(1),
            },
        ];
        let names = disambiguate(&candidates, Winner::Newest);
        assert_eq!(names, vec!["r~old111.pdf", "r.pdf", "x"]);
        let mut reversed = candidates.clone();
        reversed.reverse();
        let again = disambiguate(&reversed, Winner::Newest);
        assert_eq!(again, vec!["x", "r.pdf", "r~old111.pdf"]);
        assert_eq!(disambiguate(&candidates, Winner::Oldest)[0], "r.pdf");
    }
}
