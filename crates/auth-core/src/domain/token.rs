//! Session tokens: 32 random bytes shown to the client once, stored only as
//! their SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

const TOKEN_BYTES: usize = 32;
/// Length of the URL-safe, unpadded base64 text of 32 bytes.
const TOKEN_CHARS: usize = 43;

/// An opaque bearer token: 256 bits from the OS CSPRNG. Only its SHA-256
/// ([`TokenHash`]) is stored; the token itself is shown once, to its owner.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_BYTES]);

/// SHA-256 of a token: what the database stores and looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl SessionToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Result<SessionToken, getrandom::Error> {
        or_fault!(LowEntropyToken => Ok(crate::faults::counter_token()));
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(SessionToken(bytes))
    }

    /// Reads a token as a client sends it; `None` for anything that is not
    /// exactly the 43-character URL-safe form we issue.
    pub fn parse(text: &str) -> Option<SessionToken> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        bytes.try_into().ok().map(SessionToken)
    }

    #[cfg(feature = "faults")]
    pub(crate) fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> SessionToken {
        SessionToken(bytes)
    }

    /// The text handed to the client, once.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::SessionToken;

    #[test]
    fn round_trips_and_is_url_safe() -> Result<(), getrandom::Error> {
        let token = SessionToken::generate()?;
        let text = token.expose();
        assert_eq!(text.len(), 43);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(SessionToken::parse(&text), Some(token.clone()));
        assert_ne!(token.hash().0.to_vec(), text.as_bytes()[..32].to_vec());
        Ok(())
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &"+".repeat(43),
            &"A".repeat(10_000),
        ] {
            assert_eq!(SessionToken::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() -> Result<(), getrandom::Error> {
        let token = SessionToken::generate()?;
        let shown = format!("{token:?}");
        assert_eq!(shown, "SessionToken(***)");
        assert!(!shown.contains(&token.expose()));
        Ok(())
    }

    #[test]
    fn two_tokens_differ() -> Result<(), getrandom::Error> {
        assert_ne!(SessionToken::generate()?, SessionToken::generate()?);
        Ok(())
    }
}
