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
//! `linking`, `sync`, `cleanup` (the schedule), `mirror`, `config`, `telemetry`.

use crate::mirror::Mirror;
use std::{net::TcpListener as StdTcpListener, sync::Arc, thread::JoinHandle, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{
    admin,
    config::Config,
    configs,
    events::{self, BatchPolicy, Recorder},
    index::{self, Index, IndexError},
    linking::Linker,
    proxy::{self, Proxy, listener::ConnectionLimits},
    registry::{RegistryClient, RegistryError},
    sync, telemetry,
    tls::{self, TlsError},
    upstream::Upstream,
};

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
const EVENT_QUEUE: usize = 65_536;

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
        let mirror = Arc::new(Mirror::new(Arc::new(index::open_sled(&config.index.path)?)));
        let (events, receiver) = events::channel(EVENT_QUEUE);
        Ok(Some(Self {
            index: mirror.clone(),
            mirror,
            events,
            receiver,
        }))
    }
}

/// Runs until a shutdown signal; returns once connections are drained or the grace period ends.
pub fn serve(config: Config) -> Result<(), ServeError> {
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
    let proxy_listener = bind(config.listen)?;
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
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let threads = spawn_workers(
        &config,
        &proxy_listener,
        &upstream,
        tls.clone(),
        recording.as_ref().map(|r| r.events.clone()),
        &stop_rx,
    )?;
    drop(proxy_listener);

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin.listen,
        upstream = %config.upstream.url,
        workers = threads.len(),
        "regkeeper serving: push to {scheme}://{}",
        config.listen
    );
    let control = control_runtime()?;
    let (finish_writer, writer_finish) = tokio::sync::oneshot::channel();
    let background = Background {
        config: shared,
        client,
        linker,
        health: index_health,
        stop: stop_rx.clone(),
    };
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

/// What the admin listener serves from: the APIs that need the index exist only when
/// recording, the link and operator APIs only with their tokens.
fn admin_state(
    shared: &Arc<Config>,
    upstream: Upstream,
    client: &Arc<RegistryClient>,
    recording: Option<&Recording>,
    index_health: &events::IndexHealth,
) -> Arc<admin::AdminState> {
    let config = &**shared;
    Arc::new(admin::AdminState {
        index_health: recording.map(|_| index_health.clone()),
        upstream,
        links: match (&config.admin.link_token, recording) {
            (Some(token), Some(recording)) => Some(admin::LinkApi {
                token: token.clone(),
                index: recording.index.clone(),
                events: recording.events.clone(),
            }),
            _ => None,
        },
        index: recording.map(|r| r.index.clone()),
        plans: recording.map(|r| admin::PlanApi {
            config: shared.clone(),
            mirror: r.mirror.clone(),
            running: tokio::sync::Semaphore::new(1),
            waiting: tokio::sync::Semaphore::new(admin::EVALUATIONS_WAITING),
        }),
        operator: match (&config.admin.operator_token, recording) {
            (Some(token), Some(recording)) => Some(admin::OperatorApi {
                token: token.clone(),
                config: shared.clone(),
                mirror: recording.mirror.clone(),
                client: client.clone(),
            }),
            _ => None,
        },
        // The operator token reads too, once reads need a token at all.
        read_tokens: config
            .admin
            .read_token
            .iter()
            .chain(
                config
                    .admin
                    .read_token
                    .as_ref()
                    .and(config.admin.operator_token.as_ref()),
            )
            .cloned()
            .collect(),
        views: Arc::new(tokio::sync::Semaphore::new(admin::VIEWS_AT_ONCE)),
    })
}

/// The proxy's worker threads, each on a duplicate of the listening socket with a sibling of
/// `upstream` (its own pool).
fn spawn_workers(
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

/// The control runtime's work besides the admin listener, when recording: the index writer,
/// image-config reads, sync, and the cleanup schedule.
struct Background {
    config: Arc<Config>,
    client: Arc<RegistryClient>,
    linker: Linker,
    health: events::IndexHealth,
    stop: watch::Receiver<bool>,
}

impl Background {
    /// Spawns it all; returns the index writer, which ends once `finish` fires and the queue
    /// is applied.
    fn spawn(
        self,
        control: &tokio::runtime::Runtime,
        recording: Recording,
        finish: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<events::WriterStats> {
        let Recording {
            index,
            mirror,
            events,
            receiver,
        } = recording;
        let config = self.config;
        if !config.retention.scopes.is_empty() {
            // Read the index into memory now, so the first evaluation does not wait for it.
            let mirror = mirror.clone();
            control.spawn_blocking(move || {
                if let Err(error) = mirror.snapshot() {
                    tracing::warn!(%error, "reading the index into memory failed; the next evaluation retries");
                }
            });
        }
        let (interval, concurrency) = (config.sync.interval.0, config.sync.concurrency);
        control.spawn(crate::cleanup::schedule::run_periodic(
            crate::cleanup::schedule::Schedule {
                config,
                mirror,
                client: self.client.clone(),
            },
            self.stop.clone(),
        ));
        let (configs, config_jobs) = configs::queue(CONFIG_QUEUE);
        control.spawn(configs::run_reader(
            config_jobs,
            self.client.clone(),
            events.clone(),
            CONFIG_READERS,
        ));
        control.spawn(sync::schedule::run_periodic(
            sync::schedule::Schedule {
                client: self.client,
                index: index.clone(),
                events,
                linker: self.linker.clone(),
                interval,
                concurrency,
            },
            self.stop,
        ));
        let recorder = Recorder {
            linker: self.linker,
            configs: Some(configs),
            health: self.health,
        };
        control.spawn(events::run_writer(
            receiver,
            index,
            BatchPolicy::default(),
            recorder,
            finish,
        ))
    }
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

async fn drain(graceful: hyper_util::server::graceful::GracefulShutdown, grace: Duration) {
    let open = graceful.count();
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!(connections = open, "all connections finished"),
        Err(_) => tracing::warn!(
            grace = ?grace,
            "grace period over: closing connections that are still busy"
        ),
    }
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
