//! Property tests of every input parser: for any input they return, never
//! panic, and what they accept satisfies the contract's rules.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_core::domain::{Email, Password, SessionToken};
use proptest::prelude::*;

/// Strings that stress parsers: any Unicode, with `@`, dots, spaces and
/// control characters made likely.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9@. \t\r\n\u{0}\u{85}\u{200b}\u{130}éß-]{0,300}",
        "[a-z]{1,70}@[a-z]{1,20}(\\.[a-z]{0,10}){0,4}",
    ]
}

/// 4096 cases per property by default; `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn email_parse_accepts_only_normalised_addresses(raw in hostile_text()) {
        if let Ok(email) = Email::parse(&raw) {
            let s = email.as_str();
            prop_assert_eq!(s, s.trim());
            prop_assert_eq!(s.to_lowercase(), s);
            prop_assert!(s.chars().count() <= 254);
            prop_assert_eq!(s.matches('@').count(), 1);
            let (local, domain) = s.split_once('@').unwrap_or_default();
            prop_assert!(!local.is_empty() && local.chars().count() <= 64);
            prop_assert!(domain.split('.').all(|label| !label.is_empty()));
            prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
            // Normalising is idempotent.
            prop_assert_eq!(Email::parse(s).map(|e| e.as_str().to_owned()), Ok(s.to_owned()));
        }
    }

    #[test]
    fn password_parse_accepts_exactly_8_to_128_characters(raw in any::<String>()) {
        let chars = raw.chars().count();
        prop_assert_eq!(Password::parse(&raw).is_ok(), (8..=128).contains(&chars));
    }

    #[test]
    fn token_parse_never_panics_and_round_trips(raw in prop_oneof![any::<String>(), "[A-Za-z0-9_-]{40,46}"]) {
        if let Some(token) = SessionToken::parse(&raw) {
            prop_assert_eq!(token.expose(), raw);
        }
    }
}

#[test]
fn generated_tokens_parse_back_and_carry_256_bits() {
    for _ in 0..1000 {
        let token = match SessionToken::generate() {
            Ok(t) => t,
            Err(e) => panic!("entropy: {e}"),
        };
        let text = token.expose();
        assert_eq!(text.len(), 43, "32 bytes, base64url without padding");
        assert!(SessionToken::parse(&text).is_some_and(|t| t.hash() == token.hash()));
    }
}
