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

/// Runs until a shutdown signal; returns once connections are drained or the grace period ends.
pub fn serve(config: Config) -> Result<(), ServeError> {
    if let Err(error) = crate::metrics::install() {
        tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
    }
    // The index writer's inputs, and the sender the proxy workers and the link API share.
    let linker = Linker::new(&config.index.tag_patterns).map_err(ServeError::TagPattern)?;
    // Read once: the proxy's pool and regkeeper's own client trust the same roots.
    let upstream_tls = crate::tls::client_for_upstream(&config)?;
    let client = Arc::new(RegistryClient::new(&config, upstream_tls.clone())?);
    let (recording, events) = if config.index.record {
        // Every write goes through the mirror, which plans read instead of the whole index.
        let mirror = Arc::new(Mirror::new(Arc::new(index::open_sled(&config.index.path)?)));
        let index: Arc<dyn Index> = mirror.clone();
        let (events, receiver) = events::channel(EVENT_QUEUE);
        (Some((index, mirror, receiver)), Some(events))
    } else {
        tracing::info!("index.record is off: proxying without recording");
        (None, None)
    };
    let tls = match &config.tls {
        Some(tls) => Some(TlsAcceptor::from(tls::server_config(&tls.cert, &tls.key)?)),
        None => None,
    };
    let bind = |addr| {
        StdTcpListener::bind(addr)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let proxy_listener = bind(config.listen)?;
    let admin_listener = bind(config.admin.listen)?;
    // Built once before serving, so a bad CA bundle fails start-up; each worker gets a sibling
    // with its own pool.
    let upstream = Upstream::new(&config, upstream_tls)?;
    let workers = config.worker_threads();
    let upstreams: Vec<Upstream> = (0..workers).map(|_| upstream.sibling()).collect();
    // The evaluations (plans, the schedule, the operator's runs) share one copy.
    let shared = Arc::new(config.clone());
    let index_health = events::IndexHealth::default();
    let admin_state = Arc::new(admin::AdminState {
        index_health: recording.as_ref().map(|_| index_health.clone()),
        upstream,
        links: match (&config.admin.link_token, &recording, &events) {
            (Some(token), Some((index, _, _)), Some(events)) => Some(admin::LinkApi {
                token: token.clone(),
                index: index.clone(),
                events: events.clone(),
            }),
            _ => None,
        },
        index: recording.as_ref().map(|(index, _, _)| index.clone()),
        plans: recording.as_ref().map(|(_, mirror, _)| admin::PlanApi {
            config: shared.clone(),
            mirror: mirror.clone(),
            running: tokio::sync::Semaphore::new(1),
            waiting: tokio::sync::Semaphore::new(admin::EVALUATIONS_WAITING),
        }),
        operator: match (&config.admin.operator_token, &recording) {
            (Some(token), Some((_, mirror, _))) => Some(admin::OperatorApi {
                token: token.clone(),
                config: shared.clone(),
                mirror: mirror.clone(),
                client: client.clone(),
            }),
            _ => None,
        },
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
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = ConnectionLimits {
        header_read_timeout: config.timeouts.header_read.0,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let grace = config.timeouts.shutdown_grace.0;
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    for (index, upstream) in upstreams.into_iter().enumerate() {
        let listener = proxy_listener
            .try_clone()
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let worker = Worker {
            listener,
            tls: tls.clone(),
            proxy: Arc::new(Proxy::new(upstream, config.log.requests, events.clone())),
            limits,
            grace,
            stop: stop_rx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("regkeeper-proxy-{index}"))
            .spawn(move || worker.run())
            .map_err(ServeError::Runtime)?;
        threads.push(thread);
    }
    drop(proxy_listener);

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin.listen,
        upstream = %config.upstream.url,
        workers,
        "regkeeper serving: push to {scheme}://{}",
        config.listen
    );

    // Two workers: an evaluation or the index read moves off one (`planning::off_the_runtime`)
    // while the writer and the admin listener go on.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("regkeeper-control")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let (finish_writer, writer_finish) = tokio::sync::oneshot::channel();
    let writer = match (recording, events) {
        (Some((index, mirror, receiver)), Some(events)) => {
            if !config.retention.scopes.is_empty() {
                // Read the index into memory now, so the first evaluation does not wait for it.
                let mirror = mirror.clone();
                control.spawn_blocking(move || {
                    if let Err(error) = mirror.snapshot() {
                        tracing::warn!(%error, "reading the index into memory failed; the next evaluation retries");
                    }
                });
            }
            control.spawn(crate::cleanup::schedule::run_periodic(
                crate::cleanup::schedule::Schedule {
                    config: shared,
                    mirror: mirror.clone(),
                    client: client.clone(),
                },
                stop_rx.clone(),
            ));
            let (configs, config_jobs) = configs::queue(CONFIG_QUEUE);
            control.spawn(configs::run_reader(
                config_jobs,
                client.clone(),
                events.clone(),
                CONFIG_READERS,
            ));
            control.spawn(sync::schedule::run_periodic(
                sync::schedule::Schedule {
                    client,
                    index: index.clone(),
                    events,
                    linker: linker.clone(),
                    interval: config.sync.interval.0,
                    concurrency: config.sync.concurrency,
                },
                stop_rx.clone(),
            ));
            let recorder = Recorder {
                linker,
                configs: Some(configs),
                health: index_health,
            };
            Some(control.spawn(events::run_writer(
                receiver,
                index,
                BatchPolicy::default(),
                recorder,
                writer_finish,
            )))
        }
        _ => None,
    };
    control.spawn(async {
        let mut every = tokio::time::interval(crate::metrics::UPKEEP_PERIOD);
        loop {
            every.tick().await;
            crate::metrics::upkeep();
        }
    });
    control.block_on(async move {
        let admin_listener = TcpListener::from_std(admin_listener).map_err(|source| ServeError::Bind {
            addr: config.admin.listen,
            source,
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
    Ok(())
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
