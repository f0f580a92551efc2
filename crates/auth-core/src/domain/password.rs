//! The password a user sends: bounded, and never printed.

use std::fmt;

/// A candidate password of 8..=128 Unicode scalar values. Deliberately has no
/// `Display` and a redacting `Debug`, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct Password(String);

pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

impl Password {
    pub fn parse(raw: &str) -> Result<Password, &'static str> {
        if PASSWORD_CHARS.contains(&raw.chars().count()) {
            Ok(Password(raw.to_owned()))
        } else {
            Err("must be 8 to 128 characters")
        }
    }

    /// The secret itself, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    #[test]
    fn counts_characters_not_bytes() {
        assert!(
            Password::parse("ééééééé").is_err(),
            "7 characters, 14 bytes"
        );
        assert!(Password::parse("éééééééé").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn never_prints_the_secret() {
        let p = Password::parse("hunter2hunter2").map_err(|e| e.to_string());
        assert_eq!(format!("{p:?}"), "Ok(Password(***))");
    }
}
