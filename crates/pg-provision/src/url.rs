//! Just enough of a `postgres://` URL to swap the database name, reach the
//! host, and print it without its password.

use std::fmt;
use std::time::Duration;

/// A `postgres://user[:password]@host[:port]/database[?params]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// Everything before the database name, e.g. `postgres://u:p@h:5432`.
    authority: String,
    database: String,
    /// Query string including the leading `?`, or empty.
    query: String,
}

impl DbUrl {
    /// Splits a URL; never fails (an odd URL is passed to the driver as it is,
    /// which then reports the problem).
    pub fn parse(url: &str) -> DbUrl {
        let url = url.trim();
        let (rest, query) = match url.find('?') {
            Some(i) => (&url[..i], url[i..].to_string()),
            None => (url, String::new()),
        };
        let scheme_end = rest.find("://").map(|i| i + 3).unwrap_or(0);
        match rest[scheme_end..].find('/') {
            Some(i) => DbUrl {
                authority: rest[..scheme_end + i].to_string(),
                database: rest[scheme_end + i + 1..].to_string(),
                query,
            },
            None => DbUrl {
                authority: rest.to_string(),
                database: String::new(),
                query,
            },
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, database: &str) -> DbUrl {
        DbUrl {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// The same credentials and database on another server (a pooler in
    /// front of this one, say).
    pub fn with_host_port(&self, host: &str, port: u16) -> DbUrl {
        let scheme_end = self.authority.find("://").map_or(0, |i| i + 3);
        let (scheme, rest) = self.authority.split_at(scheme_end);
        let credentials = rest.rfind('@').map_or("", |at| &rest[..=at]);
        DbUrl {
            authority: format!("{scheme}{credentials}{host}:{port}"),
            ..self.clone()
        }
    }

    /// The user name, if the URL gives one.
    pub fn user(&self) -> Option<&str> {
        let scheme_end = self.authority.find("://").map_or(0, |i| i + 3);
        let rest = &self.authority[scheme_end..];
        let credentials = &rest[..rest.rfind('@')?];
        Some(credentials.split(':').next().unwrap_or(credentials)).filter(|u| !u.is_empty())
    }

    /// The URL with the password replaced by `***`, safe to print.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self
            .authority
            .split_at(self.authority.find("://").map(|i| i + 3).unwrap_or(0));
        let rest = match (rest.rfind('@'), rest.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                format!("{}:***{}", &rest[..colon], &rest[at..])
            }
            _ => rest.to_string(),
        };
        format!("{scheme}{rest}/{}{}", self.database, self.query)
    }

    /// `(host, port)`, defaulting like libpq does.
    pub fn host_port(&self) -> (String, u16) {
        let after_scheme = self
            .authority
            .split("://")
            .nth(1)
            .unwrap_or(&self.authority);
        let host_port = after_scheme.rsplit('@').next().unwrap_or(after_scheme);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().unwrap_or(5432))
            }
            _ => (host_port, 5432),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (
            if host.is_empty() {
                "localhost".into()
            } else {
                host.into()
            },
            port,
        )
    }

    /// Whether a TCP connection to the server opens within `timeout`.
    pub fn is_reachable(&self, timeout: Duration) -> bool {
        let (host, port) = self.host_port();
        super::tcp_reachable(&host, port, timeout)
    }
}

impl fmt::Display for DbUrl {
    /// The full URL, password included: it is what drivers need.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.authority, self.database, self.query)
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::DbUrl;

    #[test]
    fn swaps_database_and_keeps_params() {
        let url = DbUrl::parse("postgres://u:secret@db.example:6543/app?sslmode=disable");
        assert_eq!(url.database(), "app");
        assert_eq!(
            url.with_database("other").to_string(),
            "postgres://u:secret@db.example:6543/other?sslmode=disable"
        );
        assert_eq!(url.host_port(), ("db.example".to_string(), 6543));
    }

    #[test]
    fn moves_to_another_server_with_the_same_credentials() {
        let url = DbUrl::parse("postgres://u:secret@db.example:6543/app?sslmode=disable");
        assert_eq!(
            url.with_host_port("127.0.0.1", 6432).to_string(),
            "postgres://u:secret@127.0.0.1:6432/app?sslmode=disable"
        );
        assert_eq!(url.user(), Some("u"));
        let bare = DbUrl::parse("postgres://db.example/app");
        assert_eq!(
            bare.with_host_port("h", 1).to_string(),
            "postgres://h:1/app"
        );
        assert_eq!(bare.user(), None);
        assert_eq!(
            DbUrl::parse("postgres://postgres@h/app").user(),
            Some("postgres")
        );
    }

    #[test]
    fn redacts_the_password_only() {
        let url = DbUrl::parse("postgres://u:secret@h/app");
        assert_eq!(url.redacted(), "postgres://u:***@h/app");
        assert!(!format!("{url:?}").contains("secret"));
        assert_eq!(
            DbUrl::parse("postgres://u@h:1/app").redacted(),
            "postgres://u@h:1/app"
        );
    }

    #[test]
    fn defaults_host_and_port() {
        assert_eq!(
            DbUrl::parse("postgres:///app").host_port(),
            ("localhost".to_string(), 5432)
        );
        assert_eq!(
            DbUrl::parse("postgres://u@127.0.0.1/app").host_port(),
            ("127.0.0.1".to_string(), 5432)
        );
    }
}
