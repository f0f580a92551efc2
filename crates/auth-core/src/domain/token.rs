//! Session tokens and API keys: 32 random bytes shown to the client once,
//! stored only as their SHA-256. A key is written with a prefix of its own,
//! so a validation knows which table to look in, and a leaked key is
//! recognisable as one (by its owner's grep or a secret scanner).

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

/// What every API key's text starts with.
pub const API_KEY_PREFIX: &str = "tsk_";

/// An API key: a [`SessionToken`]'s 256 bits behind [`API_KEY_PREFIX`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken(SessionToken);

impl ApiKeyToken {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<ApiKeyToken, getrandom::Error> {
        SessionToken::generate().map(ApiKeyToken)
    }

    /// Reads a key as a client sends it; `None` for anything that is not
    /// the prefix followed by a token's 43 characters.
    pub fn parse(text: &str) -> Option<ApiKeyToken> {
        text.strip_prefix(API_KEY_PREFIX)
            .and_then(SessionToken::parse)
            .map(ApiKeyToken)
    }

    /// Whether `text` is written as a key (then it is looked up among
    /// keys, never among sessions): the prefix and a key's length. A
    /// session token is 43 characters, so one that happens to begin with
    /// `tsk_` (one in 2^24) is still a session token.
    pub fn is_key(text: &str) -> bool {
        text.len() == API_KEY_PREFIX.len() + TOKEN_CHARS && text.starts_with(API_KEY_PREFIX)
    }

    /// The text handed to the client, once.
    pub fn expose(&self) -> String {
        format!("{API_KEY_PREFIX}{}", self.0.expose())
    }

    pub fn hash(&self) -> TokenHash {
        self.0.hash()
    }
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyToken(***)")
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::{API_KEY_PREFIX, ApiKeyToken, SessionToken};

    #[test]
    fn a_key_reads_back_only_with_its_prefix() -> Result<(), getrandom::Error> {
        let key = ApiKeyToken::generate()?;
        let text = key.expose();
        assert!(text.starts_with(API_KEY_PREFIX) && ApiKeyToken::is_key(&text));
        assert_eq!(text.len(), API_KEY_PREFIX.len() + 43);
        assert_eq!(ApiKeyToken::parse(&text), Some(key.clone()));
        let bare = &text[API_KEY_PREFIX.len()..];
        assert_eq!(ApiKeyToken::parse(bare), None);
        assert_eq!(
            SessionToken::parse(&text),
            None,
            "a key is no session token"
        );
        assert!(!format!("{key:?}").contains(bare));
        Ok(())
    }

    #[test]
    fn a_session_token_that_begins_like_a_key_is_still_a_session_token() {
        let text = format!("{API_KEY_PREFIX}{}", "A".repeat(39));
        assert_eq!(text.len(), 43);
        assert!(SessionToken::parse(&text).is_some());
        assert!(!ApiKeyToken::is_key(&text));
    }

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
