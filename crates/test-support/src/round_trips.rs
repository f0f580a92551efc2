//! A loopback proxy between the service and PostgreSQL that counts what the
//! service asks of the database: round trips (each `Sync` of the extended
//! protocol and each simple `Query` waits for the server's answer) and
//! `Parse` messages (statements planned anew rather than run prepared).
//! Bytes pass through untouched; only the client's side is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

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

/// The running proxy; it stops accepting when dropped.
pub struct CountingProxy {
    pub port: u16,
    counters: Arc<Counters>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: (String, u16)) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the counting proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = match TcpStream::connect((upstream.0.as_str(), upstream.1)).await {
                    Ok(server) => server,
                    Err(_) => continue,
                };
                tokio::spawn(relay(client, server, shared.clone()));
            }
        });
        CountingProxy {
            port,
            counters,
            accept,
        }
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
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let _ = forward_counting(&mut client_read, &mut server_write, &counters).await;
    let _ = server_write.shutdown().await;
    let _ = answers.await;
}

/// The protocol's code of an SSL or GSSAPI encryption request, which comes
/// before the real startup message.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

async fn forward_counting(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    counters: &Counters,
) -> std::io::Result<()> {
    // Startup: a length, then a code and its parameters, no type byte.
    loop {
        let len = from.read_u32().await?;
        let mut body = vec![0; (len as usize).saturating_sub(4)];
        from.read_exact(&mut body).await?;
        to.write_u32(len).await?;
        to.write_all(&body).await?;
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if !code.is_some_and(|c| ENCRYPTION_REQUESTS.contains(&c)) {
            break;
        }
    }
    loop {
        let kind = from.read_u8().await?;
        let len = from.read_u32().await?;
        let mut body = vec![0; (len as usize).saturating_sub(4)];
        from.read_exact(&mut body).await?;
        match kind {
            b'S' | b'Q' => counters.round_trips.fetch_add(1, Ordering::SeqCst),
            b'P' => counters.parses.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        to.write_u8(kind).await?;
        to.write_u32(len).await?;
        to.write_all(&body).await?;
    }
}
