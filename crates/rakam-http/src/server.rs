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
    /// A client must send a request's headers within this time (and an
    /// idle keep-alive connection is closed after it).
    pub header_read_timeout: Duration,
    /// Connections one client address may hold open at once.
    pub max_connections_per_client: usize,
}

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

impl ClientConnections {
    fn admit(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<Admitted> {
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
        stream.shutdown().await
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
    builder.http2().timer(TokioTimer::new());
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
        tokio::spawn(async move {
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
