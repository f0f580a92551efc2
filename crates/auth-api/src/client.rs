//! Who is calling: the `User-Agent` and IP a login's session keeps. The IP
//! is the peer's, unless the peer is a trusted proxy (`TESSERA_TRUSTED_PROXIES`),
//! in which case it is read from `X-Forwarded-For`, walking from the right:
//! the first address that is not itself a trusted proxy. A proxy that
//! appends (nginx's `$proxy_add_x_forwarded_for`, cloud load balancers)
//! keeps whatever the client wrote on the left, so only the entries our own
//! proxies appended, on the right, are believed.

use actix_web::HttpRequest;
use actix_web::http::header;
use auth_core::domain::ClientInfo;
use ipnet::IpNet;
use std::net::IpAddr;

/// An `X-Forwarded-For` entry's address: `203.0.113.9`, `2001:db8::1`,
/// and with a port, as some load balancers append them, `203.0.113.9:5123`
/// or `[2001:db8::1]:443` (or bracketed without one).
fn address(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            let inner = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']'));
            inner.unwrap_or(entry).parse::<IpAddr>()
        })
        .ok()?;
    Some(ip.to_canonical())
}

/// The proxies whose `X-Forwarded-For` is believed: addresses or networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;
    /// A comma-separated list of IP addresses and CIDR networks.
    fn from_str(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    fn trusts(&self, peer: IpAddr) -> bool {
        // `::ffff:10.0.0.1` (an IPv4 peer of a socket bound to `[::]`) is
        // 10.0.0.1 to an IPv4 network.
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// The client's address. From a trusted peer: the right-most
    /// `X-Forwarded-For` entry that is not a trusted proxy (every entry
    /// trusted: the left-most, the first hop of a chain we run); an entry
    /// that is no address before that one means the header cannot be
    /// read, and the peer's address stands. From any other peer: its own.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let forwarded = || {
            let mut hop = None;
            for entry in forwarded_for?.rsplit(',') {
                let ip = address(entry.trim())?;
                hop = Some(ip);
                if !self.trusts(ip) {
                    break;
                }
            }
            hop
        };
        match peer {
            Some(peer) if self.trusts(peer) => forwarded().or(Some(peer)),
            peer => peer,
        }
    }

    /// What a login's session keeps of `req`.
    pub fn client_of(&self, req: &HttpRequest) -> ClientInfo {
        let text = |name| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        // Several header lines are one list, in order (RFC 9110, 5.3): a
        // proxy may add its own line after the client's.
        let lines: Vec<String> = req
            .headers()
            .get_all(header::HeaderName::from_static("x-forwarded-for"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let forwarded_for = (!lines.is_empty()).then(|| lines.join(","));
        let ip = self.client_ip(req.peer_addr().map(|a| a.ip()), forwarded_for.as_deref());
        ClientInfo::new(text(header::USER_AGENT).as_deref(), ip)
    }
}

#[cfg(test)]
mod tests {
    use super::TrustedProxies;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        let xff = Some("203.0.113.7, 10.1.1.1");
        assert_eq!(
            proxies.client_ip(Some(ip("10.2.3.4")), xff),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            proxies.client_ip(Some(ip("127.0.0.1")), xff),
            Some(ip("203.0.113.7"))
        );
        // An untrusted peer may write anything there: its own address counts.
        assert_eq!(
            proxies.client_ip(Some(ip("192.0.2.1")), xff),
            Some(ip("192.0.2.1"))
        );
        // A trusted peer without a usable header: its own address.
        assert_eq!(
            proxies.client_ip(Some(ip("10.2.3.4")), None),
            Some(ip("10.2.3.4"))
        );
        assert_eq!(
            proxies.client_ip(Some(ip("10.2.3.4")), Some("junk")),
            Some(ip("10.2.3.4"))
        );
        assert_eq!(
            TrustedProxies::default().client_ip(Some(ip("10.2.3.4")), xff),
            Some(ip("10.2.3.4"))
        );
        assert_eq!(proxies.client_ip(None, xff), None);
    }

    #[test]
    fn what_the_client_wrote_on_the_left_is_never_believed() {
        let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        let peer = Some(ip("127.0.0.1"));
        // The thief wrote its victim's address; an appending proxy added
        // the thief's own: the right-most untrusted entry is the thief.
        let xff = Some("198.51.100.1, 203.0.113.9, 10.0.0.1");
        assert_eq!(proxies.client_ip(peer, xff), Some(ip("203.0.113.9")));
        // Garbage or a trusted-looking address on the left changes nothing.
        for written in ["junk, 203.0.113.9", "10.9.9.9, 203.0.113.9"] {
            assert_eq!(
                proxies.client_ip(peer, Some(written)),
                Some(ip("203.0.113.9")),
                "{written}"
            );
        }
        // Every entry one of ours: the first hop of the chain.
        assert_eq!(
            proxies.client_ip(peer, Some("10.0.0.7, 10.0.0.1")),
            Some(ip("10.0.0.7"))
        );
        // Unreadable before any untrusted entry: the peer stands.
        assert_eq!(proxies.client_ip(peer, Some("203.0.113.9, junk")), peer);
        assert_eq!(
            proxies.client_ip(peer, Some("2001:db8::1, 10.0.0.1")),
            Some(ip("2001:db8::1"))
        );
        // Ports and brackets, as some load balancers write them; an
        // IPv4-mapped peer or entry is its IPv4 address.
        for written in [
            "203.0.113.9:5123, 10.0.0.1:80",
            "203.0.113.9, [::ffff:10.0.0.1]:443",
        ] {
            assert_eq!(
                proxies.client_ip(peer, Some(written)),
                Some(ip("203.0.113.9")),
                "{written}"
            );
        }
        assert_eq!(
            proxies.client_ip(peer, Some("[2001:db8::1]:443")),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            proxies.client_ip(Some(ip("::ffff:10.0.0.2")), Some("203.0.113.9")),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_list_is_read_from_its_setting() {
        let command = crate::settings::Settings::augment(clap::Command::new("auth-api"));
        let matches = command
            .try_get_matches_from(["auth-api", "--trusted-proxies", "10.0.0.0/8, ::1"])
            .unwrap();
        let settings = crate::settings::Settings::from_matches(&matches).unwrap();
        assert_eq!(
            settings.service.trusted_proxies,
            Some("10.0.0.0/8, ::1".parse().unwrap())
        );
    }

    #[test]
    fn the_list_takes_addresses_and_networks_and_names_a_bad_entry() {
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        assert!("::1, fd00::/8".parse::<TrustedProxies>().is_ok());
        let err = "10.0.0.0/8, proxy.example"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(err.contains("proxy.example"), "{err}");
    }
}
