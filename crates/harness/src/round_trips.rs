//! A loopback proxy between the service and PostgreSQL that counts what the
//! service asks of the database: round trips (each `Sync` of the extended
//! protocol and each simple `Query` waits for the server's answer; an
//! autocommit statement is one, and one transaction) and `Parse` messages
//! (statements planned anew rather than run prepared). Bytes pass through
//! untouched; only the client's side is read. Plain threads: the tests (in
//! any runtime) and the chaos tier use the same proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the service sent, since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub round_trips: u64,
    pub parses: u64,
}

impl std::ops::Sub for Sent {
    type Output = Sent;
    fn sub(self, earlier: Sent) -> Sent {
        Sent {
            round_trips: self.round_trips - earlier.round_trips,
            parses: self.parses - earlier.parses,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    round_trips: AtomicU64,
    parses: AtomicU64,
}

/// The running proxy; it stops accepting when dropped (connections already
/// relayed end with their peers).
pub struct CountingProxy {
    pub port: u16,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub fn start(upstream: (String, u16)) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let (shared, stop) = (counters.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("counting-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else {
                        continue;
                    };
                    relay(client, server, shared.clone());
                }
            })?;
        Ok(CountingProxy {
            port,
            counters,
            stopping,
        })
    }

    pub fn sent(&self) -> Sent {
        Sent {
            round_trips: self.counters.round_trips.load(Ordering::SeqCst),
            parses: self.counters.parses.load(Ordering::SeqCst),
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The server's answers copied back on one thread; the client's messages
/// counted and forwarded on another. No Nagle on either side: a message
/// goes out whole at once, as it would without the proxy.
fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (Ok(client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let mut client_read = std::io::BufReader::new(client_read);
    let (mut server_read, mut client_write) = (server, client);
    let _ = std::thread::Builder::new()
        .name("proxy-answers".into())
        .spawn(move || {
            let _ = std::io::copy(&mut server_read, &mut client_write);
            let _ = client_write.shutdown(Shutdown::Both);
        });
    let _ = std::thread::Builder::new()
        .name("proxy-asks".into())
        .spawn(move || {
            let _ = forward_counting(&mut client_read, &mut server_write, &counters);
            let _ = server_write.shutdown(Shutdown::Both);
        });
}

/// The protocol's code of an SSL or GSSAPI encryption request, which comes
/// before the real startup message.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

fn read_u32(from: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    from.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn forward_counting(
    from: &mut impl Read,
    to: &mut impl Write,
    counters: &Counters,
) -> std::io::Result<()> {
    // Startup: a length, then a code and its parameters, no type byte.
    loop {
        let message = read_message(from, None)?;
        to.write_all(&message)?;
        let code = message
            .get(4..8)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if !code.is_some_and(|c| ENCRYPTION_REQUESTS.contains(&c)) {
            break;
        }
    }
    loop {
        let mut kind = [0u8; 1];
        from.read_exact(&mut kind)?;
        match kind[0] {
            b'S' | b'Q' => counters.round_trips.fetch_add(1, Ordering::SeqCst),
            b'P' => counters.parses.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        to.write_all(&read_message(from, Some(kind[0]))?)?;
    }
}

/// One whole message (its type byte, if any, its length and its body), to
/// be forwarded in one write.
fn read_message(from: &mut impl Read, kind: Option<u8>) -> std::io::Result<Vec<u8>> {
    let len = read_u32(from)?;
    let mut message = Vec::with_capacity(len as usize + 1);
    message.extend(kind);
    message.extend_from_slice(&len.to_be_bytes());
    let start = message.len();
    message.resize(start + (len as usize).saturating_sub(4), 0);
    from.read_exact(&mut message[start..])?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::{CountingProxy, Sent};
    use std::io::{Read as _, Write as _};

    /// A fake server that echoes nothing but answers each message with 'Z'.
    #[test]
    fn counts_syncs_queries_and_parses_and_passes_bytes_through() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = ("127.0.0.1".to_owned(), server.local_addr().unwrap().port());
        let proxy = CountingProxy::start(upstream).unwrap();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        let (mut accepted, _) = server.accept().unwrap();
        // Startup (no type byte), then Parse, Sync and a simple Query.
        let startup = [0u8, 0, 0, 8, 0, 3, 0, 0];
        let messages: Vec<u8> = [
            (b'P', &b"x"[..]),
            (b'S', &b""[..]),
            (b'Q', &b"SELECT 1\0"[..]),
        ]
        .iter()
        .flat_map(|(kind, body)| {
            let mut m = vec![*kind];
            m.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
            m.extend_from_slice(body);
            m
        })
        .collect();
        client.write_all(&startup).unwrap();
        client.write_all(&messages).unwrap();
        let mut seen = vec![0u8; startup.len() + messages.len()];
        accepted.read_exact(&mut seen).unwrap();
        assert_eq!(&seen[..8], &startup);
        assert_eq!(&seen[8..], &messages[..]);
        assert_eq!(
            proxy.sent(),
            Sent {
                round_trips: 2,
                parses: 1
            }
        );
        accepted.write_all(b"Z").unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"Z");
    }
}
