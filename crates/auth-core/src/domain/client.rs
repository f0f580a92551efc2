//! Where a login came from, kept with its session and shown in the list.

use std::net::IpAddr;

/// The most of a `User-Agent` a session keeps, in characters (contract).
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// The client behind a login: its `User-Agent` (first 256 characters) and
/// IP address, either possibly unknown. Neither is a secret, but neither is
/// logged with a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    user_agent: Option<String>,
    ip: Option<IpAddr>,
}

impl ClientInfo {
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> ClientInfo {
        ClientInfo {
            user_agent: user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            ip,
        }
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_256_characters_of_the_user_agent() {
        let long = "é".repeat(300);
        let client = ClientInfo::new(Some(&long), None);
        assert_eq!(client.user_agent().map(|ua| ua.chars().count()), Some(256));
        let short = ClientInfo::new(Some("curl/8"), Some([10, 0, 0, 1].into()));
        assert_eq!(short.user_agent(), Some("curl/8"));
        assert_eq!(short.ip(), Some([10, 0, 0, 1].into()));
        assert_eq!(ClientInfo::new(None, None), ClientInfo::default());
    }
}
