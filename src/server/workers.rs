//! The proxy's worker threads: each a single-threaded runtime on a duplicate of the listening
//! socket, with its own upstream pool, log buffer and pull counts.

use std::{net::TcpListener as StdTcpListener, sync::Arc, thread::JoinHandle, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::{LOG_FLUSH_PERIOD, POOL_SWEEP_PERIOD, PULL_HAND_OVER_PERIOD, ServeError};
use crate::{
    config::Config,
    events,
    proxy::{self, Proxy, listener::ConnectionLimits},
    telemetry,
    upstream::Upstream,
};

/// The proxy's worker threads, each on a duplicate of the listening socket with a sibling of
/// `upstream` (its own pool).
pub(super) fn spawn_workers(
    config: &Config,
    proxy_listener: &StdTcpListener,
    upstream: &Upstream,
    tls: Option<TlsAcceptor>,
    events: Option<events::EventSender>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let limits = ConnectionLimits {
        header_read_timeout: config.timeouts.header_read.0,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let workers = config.worker_threads();
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    for index in 0..workers {
        let listener = proxy_listener
            .try_clone()
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let worker = Worker {
            listener,
            tls: tls.clone(),
            proxy: Arc::new(Proxy::new(
                upstream.sibling(),
                config.log.requests,
                events.clone(),
            )),
            limits,
            grace: config.timeouts.shutdown_grace.0,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("regkeeper-proxy-{index}"))
            .spawn(move || worker.run())
            .map_err(ServeError::Runtime)?;
        threads.push(thread);
    }
    Ok(threads)
}

/// One proxy worker thread's share of the work.
struct Worker {
    listener: StdTcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    limits: ConnectionLimits,
    grace: Duration,
    stop: watch::Receiver<bool>,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start a proxy worker runtime");
                return;
            }
        };
        telemetry::buffer_this_thread();
        runtime.block_on(async move {
            let proxy = self.proxy.clone();
            let housekeeping = tokio::spawn(async move {
                let mut flush = tokio::time::interval(LOG_FLUSH_PERIOD);
                let mut sweep = tokio::time::interval(POOL_SWEEP_PERIOD);
                let mut pulls = tokio::time::interval(PULL_HAND_OVER_PERIOD);
                loop {
                    tokio::select! {
                        _ = flush.tick() => telemetry::flush_thread_buffer(),
                        _ = sweep.tick() => proxy.upstream.pool.sweep(),
                        _ = pulls.tick() => proxy.hand_over_pulls(),
                    }
                }
            });
            let listener = match TcpListener::from_std(self.listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "cannot register the proxy listener");
                    return;
                }
            };
            let graceful = proxy::serve_connections(
                listener,
                self.tls,
                self.proxy.clone(),
                self.limits,
                self.stop,
            )
            .await;
            drain(graceful, self.grace).await;
            housekeeping.abort();
            self.proxy.hand_over_pulls();
        });
        telemetry::flush_thread_buffer();
    }
}

async fn drain(graceful: proxy::listener::Shutdown, grace: Duration) {
    let open = graceful.count();
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!(connections = open, "all connections finished"),
        Err(_) => tracing::warn!(
            grace = ?grace,
            "grace period over: closing connections that are still busy"
        ),
    }
}
