use std::fmt;

use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// A secret as a file holds it (a password, a PIN): without one trailing `"\n"` or `"\r\n"`, which
/// editors and `echo` end files with; any other whitespace is part of the secret.
pub fn strip_file_newline(contents: &str) -> &str {
    contents
        .strip_suffix("\r\n")
        .or_else(|| contents.strip_suffix('\n'))
        .unwrap_or(contents)
}

/// A keystore password, wiped from memory on drop; `Debug` never shows it.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password as given.
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    /// A password read from a file: strips one trailing `"\n"` or `"\r\n"`, since editors and
    /// `echo` end files with one; any other whitespace is part of the password.
    pub fn from_file_contents(contents: &str) -> Self {
        Self::new(strip_file_newline(contents))
    }

    /// The raw UTF-8 bytes (what Web3 Secret Storage feeds the KDF).
    pub(crate) fn raw_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The bytes EIP-2335 feeds the KDF: NFKD, then C0 (U+0000–U+001F), DEL (U+007F) and C1
    /// (U+0080–U+009F) removed; spaces stay.
    pub fn eip2335_bytes(&self) -> Zeroizing<Vec<u8>> {
        let kept = || {
            self.0
                .nfkd()
                .filter(|c| !matches!(u32::from(*c), 0x00..=0x1f | 0x7f..=0x9f))
        };
        // Size exactly first so the buffer never reallocates, which would leave an unwiped copy.
        let len = kept().map(char::len_utf8).sum();
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        let mut buf = Zeroizing::new([0u8; 4]);
        for c in kept() {
            out.extend_from_slice(c.encode_utf8(&mut *buf).as_bytes());
        }
        out
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}
