//! Values written as text in the file and parsed once, when the file is read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A value as the file writes it, parsed once on reading. A value that does not parse is not a
/// parse error of the whole file: `Config::problems` reports it under its key path with every
/// other problem. A `Config` leaves `Config::from_toml` only without problems, so everything
/// downstream reads the typed value with [`Parsed::get`] and never parses the text again.
#[derive(Clone)]
pub struct Parsed<T> {
    text: String,
    value: Result<T, String>,
}

impl<T: FromStr> Parsed<T>
where
    T::Err: fmt::Display,
{
    /// Parses `text`, keeping the error for the problem report.
    pub fn new(text: impl Into<String>) -> Parsed<T> {
        let text = text.into();
        let value = text.parse().map_err(|e: T::Err| e.to_string());
        Parsed { text, value }
    }
}

impl<T> Parsed<T> {
    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Why the text does not parse (reported by `Config::problems`).
    pub fn error(&self) -> Option<&str> {
        self.value.as_ref().err().map(String::as_str)
    }

    /// The value, if the text parses (for the problem checks that look at several values).
    pub fn ok(&self) -> Option<&T> {
        self.value.as_ref().ok()
    }

    /// The value of a checked configuration.
    ///
    /// # Panics
    /// If the text did not parse, which a `Config` from `Config::from_toml` rules out: it is
    /// returned only when `problems()` found nothing, and an unparsed value is a problem.
    pub fn get(&self) -> &T {
        match &self.value {
            Ok(value) => value,
            Err(e) => panic!("configuration value {:?} read unchecked: {e}", self.text),
        }
    }
}

/// Equal when written the same (what a reload compares).
impl<T> PartialEq for Parsed<T> {
    fn eq(&self, other: &Parsed<T>) -> bool {
        self.text == other.text
    }
}

impl<T> fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl<T> fmt::Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Parsed<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed<T>, D::Error> {
        String::deserialize(d).map(Parsed::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avsnode_signer::messages::Address;

    #[test]
    fn keeps_the_text_and_the_error() {
        let good: Parsed<Address> = Parsed::new("0x1111111111111111111111111111111111111111");
        assert_eq!(good.get(), &Address([0x11; 20]));
        assert_eq!(good.error(), None);
        let bad: Parsed<Address> = Parsed::new("0x11");
        assert_eq!(bad.as_str(), "0x11");
        assert!(bad.ok().is_none());
        assert!(
            bad.error().is_some_and(|e| e.contains("address")),
            "{bad:?}"
        );
    }

    #[test]
    #[should_panic(expected = "read unchecked")]
    fn an_unchecked_value_is_never_a_default() {
        let bad: Parsed<Address> = Parsed::new("nope");
        let _ = bad.get();
    }
}
