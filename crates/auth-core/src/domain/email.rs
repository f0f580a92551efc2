//! The email address as the service keeps it: normalised once, on the way in.

use std::fmt;

/// A normalised email address: trimmed, lower-cased, at most 254 characters,
/// one `@` between a non-empty local part (<= 64) and a domain of non-empty labels.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

pub const MAX_EMAIL_CHARS: usize = 254;

impl Email {
    /// Normalises and checks `raw`; the error says why it is not an email.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty");
        }
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err("must be at most 254 characters");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must contain an @");
        };
        if domain.contains('@') {
            return Err("must contain exactly one @");
        }
        if local.is_empty() || local.chars().count() > 64 {
            return Err("must have 1 to 64 characters before the @");
        }
        if domain.is_empty() || domain.split('.').any(str::is_empty) {
            return Err("must have a domain after the @");
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn normalises() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").map(|e| e.to_string()),
            Ok("alice@example.com".into())
        );
    }

    #[test]
    fn rejects_what_cannot_be_an_email() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a@b@c",
            "a b@c.d",
            "a@b..c",
            "a@.b",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
        assert_eq!(long.chars().count(), 255);
        assert!(Email::parse(&long).is_err());
        assert!(
            Email::parse(&long[1..]).is_ok(),
            "254 characters is allowed"
        );
    }

    #[test]
    fn the_part_before_the_at_is_1_to_64_characters() {
        let local = |n: usize| format!("{}@example.com", "a".repeat(n));
        assert!(Email::parse(&local(64)).is_ok(), "64 is allowed");
        assert!(Email::parse(&local(65)).is_err(), "65 is not");
    }

    #[test]
    fn debug_names_the_type_and_the_address() {
        let email = Email::parse("ada@example.com").map(|e| format!("{e:?}"));
        assert_eq!(email.as_deref(), Ok("Email(ada@example.com)"));
    }
}
