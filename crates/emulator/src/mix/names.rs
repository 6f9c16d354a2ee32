//! How the Mix server turns an uploaded file's name into its stored name: Go's
//! `multipart.Part.FileName()` (`filepath.Base`) followed by the newest `sanitizeFilename`.

/// Go's `filepath.Base` on Unix: the last `/`-separated element, trailing slashes ignored;
/// `""` gives `.` and all-slashes gives `/`. Backslashes are ordinary characters.
pub(super) fn go_base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

/// Mix's `sanitizeFilename`: every Unicode whitespace becomes `_` (Rust's `char::is_whitespace`
/// is the same White_Space set as Go's `unicode.IsSpace`); every `.` before the last dot becomes
/// `_` unless the last dot is the first character; runs of `_` collapse to one.
pub(super) fn sanitize_filename(name: &str) -> String {
    let spaced: String = name
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let dotted = match spaced.rfind('.') {
        Some(last) if last > 0 => {
            format!("{}{}", spaced[..last].replace('.', "_"), &spaced[last..])
        }
        _ => spaced,
    };
    let mut out = String::with_capacity(dotted.len());
    for c in dotted.chars() {
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_matches_go() {
        for (input, want) in [
            ("../etc/passwd", "passwd"),
            ("a/b/c.txt", "c.txt"),
            ("dir/", "dir"),
            ("a\\b.txt", "a\\b.txt"),
            ("..", ".."),
            ("/", "/"),
            ("///", "/"),
            ("", "."),
            ("plain", "plain"),
        ] {
            assert_eq!(go_base(input), want, "{input:?}");
        }
    }

    #[test]
    fn sanitize_matches_newest_server() {
        for (input, want) in [
            ("my file.tar.gz", "my_file_tar.gz"),
            (".env", ".env"),
            ("a  b\tc.txt", "a_b_c.txt"),
            (
                "Screenshot 10.02.33\u{202f}AM.png",
                "Screenshot_10_02_33_AM.png",
            ),
            ("__x__.md", "_x_.md"),
            ("a._b.c", "a_b.c"),
            ("noext", "noext"),
            ("..", "_."),
            ("x.", "x."),
            ("ünï cödé.txt", "ünï_cödé.txt"),
            ("nbsp\u{a0}and\u{3000}ideo", "nbsp_and_ideo"),
        ] {
            assert_eq!(sanitize_filename(input), want, "{input:?}");
        }
    }
}
