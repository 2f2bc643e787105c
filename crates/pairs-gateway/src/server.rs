//! The listener: binds loopback, accepts connections (at most [`Config::max_connections`] at once),
//! serves HTTP/1.1 on each and shuts down gracefully.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

use crate::respond::{self, Inner};
use crate::source::Source;

/// How the gateway behaves; [`Config::default`] suits a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long one [`Source::resolve`] call may take before the request is answered with 504.
    pub resolve_timeout: Duration,
    /// How long a response waits for the next bytes of a file still arriving
    /// ([`RangeReader::ready`](crate::RangeReader::ready)): for the first ones, the answer is then a
    /// 504 (no headers were sent yet); later, the connection is closed, so the client sees a
    /// truncated body rather than a complete-looking one.
    pub read_timeout: Duration,
    /// How long a connection may take to send a request's headers (idle keep-alive connections
    /// included) before it is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// After shutdown is asked for, how long requests in progress may take to finish before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            resolve_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// The gateway, bound to a loopback address and ready to [`run`](Gateway::run).
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
}

impl Gateway {
    /// Binds `addr`, which must be a loopback address (the gateway is for this machine's browser
    /// only). Port 0 picks a free port; [`local_addr`](Gateway::local_addr) tells which.
    pub async fn bind(addr: SocketAddr) -> io::Result<Gateway> {
        check_loopback(addr)?;
        Gateway::from_listener(TcpListener::bind(addr).await?)
    }

    /// Takes a listener bound elsewhere; it must be on a loopback address.
    pub fn from_listener(listener: TcpListener) -> io::Result<Gateway> {
        let local_addr = listener.local_addr()?;
        check_loopback(local_addr)?;
        Ok(Gateway {
            listener,
            local_addr,
            config: Config::default(),
        })
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: Config) -> Gateway {
        self.config = config;
        self
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `source` until `shutdown` completes. Then it stops accepting, lets requests in progress
    /// finish for [`Config::shutdown_grace`], drops the connections still open and returns.
    ///
    /// Errors accepting a connection (such as running out of file descriptors) are retried after a
    /// short pause; they never end the gateway.
    pub async fn run(self, source: Arc<dyn Source>, shutdown: impl Future<Output = ()> + Send) {
        let Gateway {
            listener,
            local_addr,
            config,
        } = self;
        let grace = config.shutdown_grace;
        let header_read_timeout = config.header_read_timeout;
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let app = respond::router(Arc::new(Inner {
            source,
            port: local_addr.port(),
            config,
        }));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let stream = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        debug!(%err, "gateway: accept failed");
                        // Not a busy loop when file descriptors run out.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
            let connection = graceful.watch(connection);
            connections.spawn(async move {
                if let Err(err) = connection.await {
                    debug!(%err, "gateway: connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            debug!(
                open = connections.len(),
                "gateway: dropping connections still open after the grace period"
            );
        }
        connections.shutdown().await;
    }
}

fn check_loopback(addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the gateway listens on loopback only, not {addr}"),
        ))
    }
}
