//! Who is calling: the `User-Agent` and IP a login's session keeps. The IP
//! is the peer's, unless the peer is a trusted proxy (`TESSERA_TRUSTED_PROXIES`),
//! in which case it is the left-most `X-Forwarded-For` entry: a client can
//! put anything there, so only a proxy we run may speak for it.

use actix_web::HttpRequest;
use actix_web::http::header;
use auth_core::domain::ClientInfo;
use ipnet::IpNet;
use std::net::IpAddr;

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
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// The client's address: the left-most `X-Forwarded-For` entry when the
    /// peer is trusted and the entry is an address, else the peer's.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let forwarded = || {
            forwarded_for?
                .split(',')
                .next()?
                .trim()
                .parse::<IpAddr>()
                .ok()
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
        let ip = self.client_ip(
            req.peer_addr().map(|a| a.ip()),
            text(header::HeaderName::from_static("x-forwarded-for")).as_deref(),
        );
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
