//! The one md5 of a local file, for the APIs that check or report one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use md5::{Digest, Md5};

/// Bytes hashed per read.
const HASH_CHUNK_BYTES: usize = 1 << 20;

/// Lower-case hex md5 of bytes `0..len` of `file`, or of all of it when it is shorter (the
/// upload that follows then fails on the short body, where the error belongs). Blocking.
pub fn md5_of_file(file: &File, len: u64) -> io::Result<String> {
    let mut hasher = Md5::new();
    let mut buf = vec![0; HASH_CHUNK_BYTES];
    let mut offset = 0;
    while offset < len {
        let want = (len - offset).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_exactly_the_asked_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            md5_of_file(&file, 3).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            md5_of_file(&file, 100).unwrap(),
            md5_of_file(&file, 6).unwrap(),
            "a shorter file is hashed whole"
        );
    }
}
