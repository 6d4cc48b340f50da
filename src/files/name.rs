//! Uploaded file names: cleaned once, then only ever metadata. The bytes are
//! stored under the file's id ([`super::disk`]), so no name reaches the
//! filesystem; the name is cleaned anyway (belt and braces, and for the
//! `Content-Disposition` it is served with).

use percent_encoding::percent_decode_str;

/// Longest name kept, in bytes (a common filesystem limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name contains a NUL, control or invisible formatting character")]
    Control,
    #[error("the name is empty, `.` or `..` once its directories are removed")]
    Empty,
    #[error("the name is longer than 255 bytes")]
    TooLong,
    #[error("the name is not valid UTF-8 after percent-decoding")]
    NotUtf8,
}

/// The base name of an uploaded file: percent-decoded once, every directory
/// component removed (for `/` and `\`), surrounding whitespace trimmed.
/// `../../etc/passwd` → `passwd`; NUL or control characters, and a result that
/// is empty, `.` or `..`, are refused.
pub fn clean(raw: &str) -> Result<String, NameError> {
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| NameError::NotUtf8)?;
    if decoded.chars().any(|c| c.is_control() || invisible(c)) {
        return Err(NameError::Control);
    }
    let base = decoded.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if base.is_empty() || base == "." || base == ".." {
        return Err(NameError::Empty);
    }
    if base.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    Ok(base.to_owned())
}

/// Invisible formatting characters (bidirectional overrides, zero-width
/// characters, …) that could make `invoice_fdp.exe` display as `invoice_exe.pdf`.
fn invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A `Content-Disposition: attachment` value for `name`: an ASCII fallback
/// (anything else becomes `_`) and the exact name in RFC 5987 form.
pub fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let exact = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_components_are_stripped() {
        assert_eq!(clean("../../etc/passwd").as_deref(), Ok("passwd"));
        assert_eq!(clean("..\\..\\windows\\system32\\cmd.exe").as_deref(), Ok("cmd.exe"));
        assert_eq!(clean("%2e%2e%2fetc%2fpasswd").as_deref(), Ok("passwd"));
        assert_eq!(clean("a/b\\c/report final.pdf").as_deref(), Ok("report final.pdf"));
        assert_eq!(clean("/absolute/path.txt").as_deref(), Ok("path.txt"));
        assert_eq!(clean("naïve résumé.txt").as_deref(), Ok("naïve résumé.txt"));
        // Decoded once only: a double-encoded slash stays text, and never a separator.
        assert_eq!(clean("%252e%252e%252fx").as_deref(), Ok("%2e%2e%2fx"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for raw in ["", ".", "..", "../", "a/..", "a/.", "x/", "  ", "..\\", "%2e%2e", "%2E%2E%5C"] {
            assert_eq!(clean(raw), Err(NameError::Empty), "{raw:?}");
        }
        for raw in [
            "a\0b",
            "a%00b",
            "line\nbreak",
            "tab%09",
            "esc\u{1b}",
            "del\u{7f}",
            "invoice\u{202e}fdp.exe",
            "a%E2%80%8Bb",
        ] {
            assert_eq!(clean(raw), Err(NameError::Control), "{raw:?}");
        }
        assert_eq!(clean("%ff%fe"), Err(NameError::NotUtf8));
        assert_eq!(clean(&"a".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn disposition_is_safe_for_any_name() {
        let value = content_disposition("a\"b\\c;é.txt");
        assert!(value.starts_with("attachment; filename=\"a_b_c;_.txt\"; filename*=UTF-8''"), "{value}");
        assert!(!value.contains('\n'));
    }
}
