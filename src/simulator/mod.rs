//! A local Tencent IM REST gateway for `unban_group_member`,
//! `ban_group_member` and `get_group_ban_member`.
//!
//! It checks what the real gateway checks (method, query parameters, the
//! UserSig against its key, the admin identifier, the 20-member cap, group
//! existence and type, a sliding-window rate limit) and answers with the
//! documented ErrorCodes, HTTP 200 with a JSON body for business errors.
//! Faults (10002 answers, HTTP 502, latency) come from a seeded RNG so runs
//! repeat. `/simulator/state`, `/simulator/requests` and `/simulator/stats`
//! expose what it holds and what it received.
//!
//! It serves users trying the operator without a Tencent account, users'
//! own CI, our tests and our benchmarks; it is a product feature.

mod config;
mod gateway;
mod groups;
mod seed;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Faults, SimulatorConfig};
pub use groups::MAX_MEMBERS_PER_CALL;
pub use seed::{SeedError, SeedFile};
pub use server::LoggedRequest;

/// Why one of the simulator's own pages could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot set up an HTTP client")]
    Client(#[source] crate::im::TransportError),
    #[error("the simulator did not answer")]
    Http(#[source] reqwest::Error),
}

/// A simulator serving in this process; dropping it stops the server.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSimulator {
    /// The base URL to give a client, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Reads one of its JSON endpoints: `/simulator/state`,
    /// `/simulator/requests` or `/simulator/stats`.
    pub async fn fetch_json(&self, path: &str) -> Result<serde_json::Value, FetchError> {
        // The operator's own client: no proxy for loopback, bounded waits.
        let client = crate::im::client::http_client(Duration::from_secs(10)).map_err(FetchError::Client)?;
        let url = format!("{}{path}", self.base_url());
        let answer = client.get(url).send().await.and_then(|a| a.error_for_status()).map_err(FetchError::Http)?;
        answer.json().await.map_err(FetchError::Http)
    }

    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How long a client may take to send a request's headers (from opening
/// the connection, or from the previous answer). A client that sends half a
/// header, or nothing, would otherwise hold its connection, and a shutdown,
/// as long as it liked.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A kept-alive connection is closed (after its request in flight) this long
/// after it opened, so no client holds one for ever. Clients reconnect.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);

/// How long a stop waits for requests in flight before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds `listen` and serves until stopped.
pub async fn start(config: SimulatorConfig, listen: SocketAddr) -> std::io::Result<RunningSimulator> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = server::router(Arc::new(server::Shared::new(config)));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, stopped));
    Ok(RunningSimulator { addr, shutdown: Some(shutdown), task: Some(task) })
}

/// axum::serve, plus the timeouts above and a bounded graceful stop.
async fn serve(listener: TcpListener, app: axum::Router, mut stopped: oneshot::Receiver<()>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1 only: hyper's header timeout covers HTTP/1 alone, and protocol
    // detection would wait for a first byte with no timer. (The gateway
    // speaks HTTP/1.1; clients negotiate down.)
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "Simulator could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let (builder, service, mut closing) = (builder.clone(), TowerToHyperService::new(app.clone()), closing.clone());
        connections.spawn(async move {
            // hyper's header timer starts at the first byte: wait for that
            // one ourselves.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing.wait_for(|closing| *closing) => {}
                () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    closing_tx.send_replace(true);
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "Simulator stopped with requests still in flight");
    }
    Ok(())
}
