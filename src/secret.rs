//! A wrapper that keeps credentials out of logs, errors and debug output.
//!
//! Every value that can authenticate against Tencent IM (the secret key, a
//! UserSig) lives in a [`Redacted`]. Its `Debug` and `Display` print a fixed
//! placeholder, so a stray `{:?}` in a log line or an error cannot leak it;
//! reading the value takes an explicit, greppable [`Redacted::expose`].

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself. Call it only where the value leaves the process on
    /// purpose: the HMAC key, the `usersig` query parameter.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = Redacted::new("5bd2850fff3ecb11".to_string());
        assert_eq!(format!("{key:?} {key}"), "<redacted> <redacted>");
        assert_eq!(key.expose(), "5bd2850fff3ecb11");
    }
}
