//! The one table from file extension to MIME type, for clients that must name a type on
//! upload and for emulators that derive one as their server does.

/// The MIME type (without parameters) of `name`'s extension, case-insensitive; `None` for an
/// extension the table does not know. Go's built-in `mime` table plus the common entries of a
/// Linux `/etc/mime.types`.
pub fn by_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "avif" => "image/avif",
        "css" => "text/css",
        "csv" => "text/csv",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "gif" => "image/gif",
        "gz" => "application/gzip",
        "htm" | "html" => "text/html",
        "jpeg" | "jpg" => "image/jpeg",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "log" => "text/plain",
        "md" => "text/markdown",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "tar" => "application/x-tar",
        "txt" => "text/plain",
        "wasm" => "application/wasm",
        "webm" => "video/webm",
        "webp" => "image/webp",
        "xml" => "text/xml",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// The MIME type to declare when uploading `name`: from its extension, else
/// `application/octet-stream`.
pub fn for_upload(name: &str) -> &'static str {
    by_extension(name).unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_last_extension_in_any_case() {
        assert_eq!(for_upload("a.TXT"), "text/plain");
        assert_eq!(for_upload("archive.tar.gz"), "application/gzip");
        assert_eq!(for_upload("README"), "application/octet-stream");
        assert_eq!(by_extension("x.unknown"), None);
    }
}
