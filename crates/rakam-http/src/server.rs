//! The accept loop: hyper with a header read timeout, a cap on open
//! connections per client address, and graceful shutdown. (`axum::serve`
//! offers neither of the first two.)

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must send a request's headers within this time (and a
    /// silent new connection or an idle keep-alive one is closed after it).
    pub header_read_timeout: Duration,
    /// Connections one client address may hold open at once.
    pub max_connections_per_client: usize,
}

/// Requests one HTTP/2 connection may have in flight at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Open connections per client address.
#[derive(Debug, Default)]
struct ClientConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees the client's slot.
struct Admitted {
    clients: Arc<ClientConnections>,
    address: IpAddr,
}

/// The address a client is counted by: its IPv4 address, or the /64 of
/// its IPv6 address (one host commonly holds a whole /64).
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl ClientConnections {
    fn admit(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<Admitted> {
        let address = client_key(address);
        let mut open = self.open.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Admitted {
            clients: Arc::clone(self),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock();
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Answers a connection over its client's cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        "{{\"error\":\"this client has {max} connections open already \
         (server.max_connections_per_client)\",\"error_code\":5004}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would send a reset that can
        // overtake the answer: read what the client sent first.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in flight finish (within `SHUTDOWN_GRACE`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // An HTTP/2 connection multiplexes requests: without a bound, the
    // per-client connection cap would not bound requests.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(64 << 10)
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let clients = Arc::new(ClientConnections::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = clients.admit(peer.ip(), limits.max_connections_per_client) else {
            metrics::counter!("rakam_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream, limits.max_connections_per_client));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper times the headers from their first byte: a connection
            // that sends nothing at all is closed here.
            let mut first = [0u8; 1];
            if tokio::time::timeout(first_byte_timeout, stream.peek(&mut first))
                .await
                .is_err()
            {
                metrics::counter!("rakam_idle_connections_closed_total").increment(1);
                return;
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_slash_64() {
        let v4: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(client_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
    }

    #[test]
    fn slots_are_freed_when_connections_end() {
        let clients = Arc::new(ClientConnections::default());
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let first = clients.admit(ip, 2);
        let second = clients.admit(ip, 2);
        assert!(first.is_some() && second.is_some());
        assert!(clients.admit(ip, 2).is_none());
        drop(first);
        assert!(clients.admit(ip, 2).is_some());
        drop(second);
        assert!(clients.open.lock().is_empty());
    }
}
