//! Hands each incoming connection to the protocol that registered its ALPN.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::connection::Connection;
use crate::endpoint::Endpoint;

/// Most handshakes in progress at once; more incoming attempts are refused rather than queued.
const MAX_PENDING_HANDSHAKES: usize = 128;

/// Most incoming connections established at once, every protocol together, unless the builder
/// says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// A protocol that serves incoming connections.
pub trait ProtocolHandler: Send + Sync + 'static {
    /// Serves one authenticated connection whose ALPN is this protocol's. Runs in its own task.
    fn accept(&self, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// Hands connections to whoever holds the receiving end, e.g. a CLI command serving peers one by one.
/// When the receiver is full or gone, the connection is closed.
impl ProtocolHandler for mpsc::Sender<Connection> {
    fn accept(&self, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let tx = self.clone();
        Box::pin(async move {
            if let Err(mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c)) =
                tx.try_send(connection)
            {
                c.close(1, b"busy");
            }
        })
    }
}

/// Collects protocol handlers, then starts accepting.
pub struct RouterBuilder {
    endpoint: Endpoint,
    handlers: HashMap<Vec<u8>, Arc<dyn ProtocolHandler>>,
    max_connections: usize,
}

impl RouterBuilder {
    /// Serves protocol `alpn` with `handler`.
    pub fn accept(mut self, alpn: impl AsRef<[u8]>, handler: impl ProtocolHandler) -> Self {
        self.handlers
            .insert(alpn.as_ref().to_vec(), Arc::new(handler));
        self
    }

    /// Caps the incoming connections established at once, every protocol together; attempts over
    /// the cap are refused before their handshake.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Starts accepting connections for the registered protocols.
    pub fn spawn(self) -> Router {
        let alpns = self.handlers.keys().cloned().collect();
        self.endpoint.set_server_protocols(alpns);
        let endpoint = self.endpoint.clone();
        let handlers = Arc::new(self.handlers);
        let task = tokio::spawn(accept_loop(endpoint, handlers, self.max_connections));
        Router {
            endpoint: self.endpoint,
            task,
        }
    }
}

/// Accepts incoming connections and routes them by ALPN. Stops when dropped or shut down.
#[derive(Debug)]
pub struct Router {
    endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl Router {
    /// Starts building a router for `endpoint`.
    pub fn builder(endpoint: Endpoint) -> RouterBuilder {
        RouterBuilder {
            endpoint,
            handlers: HashMap::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// The endpoint this router serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Stops accepting and closes the endpoint.
    pub async fn shutdown(self) {
        self.task.abort();
        self.endpoint.close().await;
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    handlers: Arc<HashMap<Vec<u8>, Arc<dyn ProtocolHandler>>>,
    max_connections: usize,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let established = Arc::new(Semaphore::new(max_connections));
    while let Some(incoming) = endpoint.quinn().accept().await {
        let Ok(slot) = established.clone().try_acquire_owned() else {
            debug!(from = %incoming.remote_address(), "refusing connection: too many connections");
            incoming.refuse();
            continue;
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            debug!(from = %incoming.remote_address(), "refusing connection: too many handshakes");
            incoming.refuse();
            continue;
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let connection = match incoming.await {
                Ok(conn) => conn,
                Err(err) => {
                    debug!(%from, %err, "incoming handshake failed");
                    return;
                }
            };
            drop(permit);
            let Some(connection) = Connection::from_quinn(connection) else {
                warn!(%from, "handshake completed without a node key or protocol");
                return;
            };
            // The connection holds its slot until it closes, whatever its handler does with it.
            let watched = connection.clone();
            tokio::spawn(async move {
                watched.closed().await;
                drop(slot);
            });
            match handlers.get(connection.alpn()) {
                Some(handler) => {
                    debug!(peer = %connection.remote_node_id().short(), %from, "accepted");
                    handler.accept(connection).await;
                }
                None => connection.close(1, b"no such protocol"),
            }
        });
    }
}
