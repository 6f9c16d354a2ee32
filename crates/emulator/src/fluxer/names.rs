//! Filename rules: `normalizeFilename` of Fluxer's `FilenameType`, step by step as upstream
//! applies them, and the content type a stored file gets from its extension.
//!
//! Approximation: JavaScript's `\p{M}` (marks) has no std predicate in Rust; combining marks in
//! the common combining blocks are kept, and spacing marks of scripts Rust counts as alphabetic
//! are kept through `is_alphanumeric`. Other marks are dropped.

/// Longest filename accepted before normalisation.
pub(super) const MAX_FILENAME_CHARS: usize = 255;

/// Why a filename is refused: outside 1..=255 characters.
pub(super) fn length_problem(name: &str) -> Option<&'static str> {
    let len = name.encode_utf16().count();
    (len == 0 || len > MAX_FILENAME_CHARS)
        .then_some("Filename length must be between 1 and 255 characters")
}

/// Fluxer's `normalizeFilename`: `"my file (1).txt"` → `my_file_1.txt`.
pub(super) fn normalize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .filter(|c| !matches!(c, '\u{202E}' | '\u{000C}'))
        .collect::<String>()
        .trim()
        .chars()
        .filter(|&c| c != '\0')
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    s = collapse_dot_runs(&s);
    s.retain(|c| !matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'));
    if is_windows_reserved(&s) {
        s.insert(0, '_');
    }
    s = whitespace_runs_to_underscore(&s);
    s.retain(|c| c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '_' | '.' | '-'));
    s = s.replace("..", "_");
    if s.is_empty() || s.chars().all(|c| c == '.' || c == '_') {
        return "unnamed".to_owned();
    }
    s
}

/// `/\.{2,}/g` → `_`.
fn collapse_dot_runs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut dots = 0;
    for c in s.chars().chain(std::iter::once('\0')) {
        if c == '.' {
            dots += 1;
            continue;
        }
        match dots {
            0 => {}
            1 => out.push('.'),
            _ => out.push('_'),
        }
        dots = 0;
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// `/\s+/g` → `_`.
fn whitespace_runs_to_underscore(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if c.is_whitespace() || c == '\u{FEFF}' {
            if !in_space {
                out.push('_');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `/^(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\.|$)/i`.
fn is_windows_reserved(s: &str) -> bool {
    let stem = s.split('.').next().unwrap_or_default().to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let bytes = stem.as_bytes();
            bytes.len() == 4
                && (stem.starts_with("COM") || stem.starts_with("LPT"))
                && (b'1'..=b'9').contains(&bytes[3])
        }
    }
}

fn is_combining_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x0483..=0x0489 | 0x0591..=0x05BD | 0x0610..=0x061A | 0x064B..=0x065F
        | 0x0E31 | 0x0E34..=0x0E3A | 0x0E47..=0x0E4E | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF
        | 0x20D0..=0x20FF | 0x3099..=0x309A | 0xFE20..=0xFE2F)
}

/// The content type the server derives from a filename's extension.
pub(super) fn content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_fluxer() {
        for (input, want) in [
            ("my file (1).txt", "my_file_1.txt"),
            ("a/b\\c.txt", "a_b_c.txt"),
            ("../../etc/passwd", "____etc_passwd"),
            ("x..y...z", "x_y_z"),
            ("what?<>:\"|*.md", "what.md"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("COM1.log", "_COM1.log"),
            ("COM0.log", "COM0.log"),
            ("  tabs\tand  spaces ", "tabs_and_spaces"),
            ("\u{202E}evil\u{000C}.exe", "evil.exe"),
            ("ünïcödé ñame.txt", "ünïcödé_ñame.txt"),
            ("e\u{0301}.txt", "e\u{0301}.txt"),
            ("日本語.txt", "日本語.txt"),
            ("emoji 🎉.png", "emoji_.png"),
            ("...", "unnamed"),
            ("_._", "unnamed"),
            ("!!!", "unnamed"),
            ("a\0b", "ab"),
        ] {
            assert_eq!(normalize(input), want, "{input:?}");
        }
    }

    #[test]
    fn lengths_and_types() {
        assert!(length_problem("").is_some());
        assert!(length_problem(&"a".repeat(255)).is_none());
        assert!(length_problem(&"a".repeat(256)).is_some());
        assert_eq!(content_type("a.TXT"), "text/plain");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
