//! `regkeeper serve`: the process layout and its lifecycle.
//!
//! The proxy runs thread-per-core: `workers` threads, each a single-threaded tokio runtime that
//! accepts from the same listening socket (a duplicated descriptor, so an idle worker tends to
//! take the next connection) and owns its own upstream connection pool. A request and its upstream
//! connection never change threads, which saves the cross-thread wakeups a work-stealing runtime
//! pays per request. A control runtime (two threads) runs the admin listener, signals, the index
//! writer, sync, the cleanup schedule, and shutdown (stop accepting, let in-flight requests finish
//! within the grace period).
//!
//! May call: `proxy`, `admin`, `upstream`, `tls`, `events`, `index`, `registry`, `configs`,
//! `linking`, `sync`, `cleanup` (the schedule), `mirror`, `config`, `telemetry`, `leader`,
//! `notifications`, `backend` (opening
//! the index).

use std::{net::TcpListener as StdTcpListener, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{
    admin,
    config::Config,
    events,
    index::{Index, IndexError},
    linking::Linker,
    mirror::Mirror,
    registry::{RegistryClient, RegistryError},
    tls::{self, TlsError},
    upstream::Upstream,
};

mod background;
mod workers;

use background::{Background, admin_state};
use workers::spawn_workers;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot start a runtime thread: {0}")]
    Runtime(std::io::Error),
    #[error("index.tagPatterns: {0}")]
    TagPattern(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Image configs waiting to be read before further ones are dropped (and left to `sync`).
const CONFIG_QUEUE: usize = 4096;
/// Image configs read at once after pushes.
const CONFIG_READERS: usize = 4;

/// Events the proxy may queue ahead of the index writer before it starts dropping them.
pub const EVENT_QUEUE: usize = 65_536;

/// How often a proxy worker writes out its buffered log lines.
const LOG_FLUSH_PERIOD: Duration = Duration::from_millis(100);

/// How often a proxy worker hands its pull counts to the index writer.
const PULL_HAND_OVER_PERIOD: Duration = Duration::from_secs(1);

/// How often a proxy worker closes upstream connections idle longer than `timeouts.poolIdle`.
const POOL_SWEEP_PERIOD: Duration = Duration::from_secs(5);

/// The index side of a recording proxy: the mirror every write goes through (plans read it
/// instead of the whole index), and the events queue from the proxy workers to its writer.
struct Recording {
    index: Arc<dyn Index>,
    mirror: Arc<Mirror>,
    /// This process's claim to lead cleanup and sync among those sharing the index.
    leadership: Arc<crate::leader::Leadership>,
    events: events::EventSender,
    receiver: events::EventReceiver,
}

impl Recording {
    /// `None` when `index.record` is off.
    fn open(config: &Config) -> Result<Option<Self>, ServeError> {
        if !config.index.record {
            tracing::info!("index.record is off: proxying without recording");
            return Ok(None);
        }
        let mirror = Arc::new(Mirror::new(crate::backend::open(config)?));
        let (events, receiver) = events::channel(EVENT_QUEUE);
        let leadership = crate::backend::leadership(config, mirror.clone());
        Ok(Some(Self {
            index: mirror.clone(),
            mirror,
            leadership,
            events,
            receiver,
        }))
    }
}

/// How `serve` stands to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In front of it: the proxy listener records pushes and pulls as they pass.
    Proxy,
    /// Next to it (`--no-proxy`): no proxy listener; notifications and `sync` feed the index.
    Sidecar,
}

/// Runs until a shutdown signal; returns once connections are drained or the grace period ends.
pub fn serve(config: Config, mode: Mode) -> Result<(), ServeError> {
    if let Err(error) = crate::metrics::install() {
        tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
    }
    let linker = Linker::new(&config.index.tag_patterns).map_err(ServeError::TagPattern)?;
    // One connector: the proxy's pools and regkeeper's own client reach the upstream alike.
    let connector = crate::upstream::connector(&config, tls::client_for_upstream(&config)?);
    let client = Arc::new(RegistryClient::with_connector(&config, connector.clone())?);
    let recording = Recording::open(&config)?;
    let tls = match &config.tls {
        Some(tls) => Some(TlsAcceptor::from(tls::server_config(&tls.cert, &tls.key)?)),
        None => None,
    };
    let proxy_listener = match mode {
        Mode::Proxy => Some(bind(config.listen)?),
        Mode::Sidecar => None,
    };
    let admin_listener = bind(config.admin.listen)?;
    // Each worker gets a sibling with its own pool.
    let upstream = Upstream::with_connector(&config, connector)?;
    let index_health = events::IndexHealth::default();
    let shared = Arc::new(config.clone());
    let admin_state = admin_state(
        &shared,
        upstream.sibling(),
        &client,
        recording.as_ref(),
        &index_health,
        &linker,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let threads = match &proxy_listener {
        Some(listener) => spawn_workers(
            &config,
            listener,
            &upstream,
            tls.clone(),
            recording.as_ref().map(|r| r.events.clone()),
            &stop_rx,
        )?,
        None => Vec::new(),
    };
    drop(proxy_listener);

    let scheme = if tls.is_some() { "https" } else { "http" };
    match mode {
        Mode::Proxy => tracing::info!(
            listen = %config.listen,
            admin = %config.admin.listen,
            upstream = %config.upstream.url,
            workers = threads.len(),
            "regkeeper serving: push to {scheme}://{}",
            config.listen
        ),
        Mode::Sidecar => tracing::info!(
            admin = %config.admin.listen,
            upstream = %config.upstream.url,
            notifications = config.admin.notification_token.is_some(),
            "regkeeper serving next to the registry (no proxy): notifications to http://{}/api/v1/notifications",
            config.admin.listen
        ),
    }
    let control = control_runtime()?;
    let (finish_writer, writer_finish) = tokio::sync::oneshot::channel();
    let background = Background {
        config: shared,
        client,
        linker,
        health: index_health,
        stop: stop_rx.clone(),
    };
    let leadership = recording.as_ref().map(|r| r.leadership.clone());
    let writer = recording.map(|recording| background.spawn(&control, recording, writer_finish));
    control.spawn(metrics_upkeep());
    let admin_addr = config.admin.listen;
    control.block_on(async move {
        let admin_listener = TcpListener::from_std(admin_listener).map_err(|source| {
            ServeError::Bind {
                addr: admin_addr,
                source,
            }
        })?;
        let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx));
        shutdown_signal().await;
        tracing::info!(grace = %config.timeouts.shutdown_grace, "shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        Ok::<(), ServeError>(())
    })?;
    for thread in threads {
        let _ = thread.join();
    }
    // Another replica need not wait for the lease to expire.
    if let Some(leadership) = leadership {
        leadership.resign();
    }
    // The workers are gone: the writer applies what is still queued, flushes and ends.
    let _ = finish_writer.send(());
    if let Some(writer) = writer {
        finish(&control, writer);
    }
    Ok(())
}

/// The process gauges, refreshed between scrapes.
async fn metrics_upkeep() {
    let mut every = tokio::time::interval(crate::metrics::UPKEEP_PERIOD);
    loop {
        every.tick().await;
        crate::metrics::upkeep();
    }
}

/// Two workers: an evaluation or the index read moves off one (`planning::off_the_runtime`)
/// while the writer and the admin listener go on.
fn control_runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("regkeeper-control")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)
}

/// Waits for the index writer to apply what is queued, and says how it went.
fn finish(control: &tokio::runtime::Runtime, writer: tokio::task::JoinHandle<events::WriterStats>) {
    match control.block_on(writer) {
        Ok(stats) => tracing::info!(
            events = stats.events,
            batches = stats.batches,
            failed = stats.failed_batches,
            "index writer finished"
        ),
        Err(error) => tracing::error!(%error, "index writer failed"),
    }
}

/// A non-blocking listening socket, for a tokio runtime to adopt.
fn bind(addr: std::net::SocketAddr) -> Result<StdTcpListener, ServeError> {
    StdTcpListener::bind(addr)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops regkeeper");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
