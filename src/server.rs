//! `regkeeper serve`: binds the proxy and admin listeners, runs them, and shuts down gracefully
//! on SIGTERM/SIGINT (stop accepting, let in-flight requests finish within the grace period).
//!
//! May call: `proxy`, `admin`, `upstream`, `tls`.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::{
    admin,
    config::Config,
    proxy::{self, Proxy, listener::ConnectionLimits},
    tls::{self, TlsError},
    upstream::Upstream,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("cannot create index directory {path}: {source}")]
    IndexDir {
        path: String,
        source: std::io::Error,
    },
}

/// Runs until a shutdown signal; returns once connections are drained or the grace period ends.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.index.path).map_err(|source| ServeError::IndexDir {
        path: config.index.path.display().to_string(),
        source,
    })?;
    let tls = match &config.tls {
        Some(tls) => Some(TlsAcceptor::from(tls::server_config(&tls.cert, &tls.key)?)),
        None => None,
    };
    let proxy = Arc::new(Proxy::new(Upstream::new(&config)?, config.log.requests));
    let admin_upstream = Arc::new(Upstream::new(&config)?);

    let proxy_listener = proxy::listener::bind(config.listen)
        .await
        .map_err(ServeError::Bind)?;
    let admin_listener = proxy::listener::bind(config.admin.listen)
        .await
        .map_err(ServeError::Bind)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin.listen,
        upstream = %config.upstream.url,
        "regkeeper serving: push to {scheme}://{}",
        config.listen
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = ConnectionLimits {
        header_read_timeout: config.timeouts.header_read.0,
        max_header_bytes: config.limits.max_header_bytes,
    };
    let proxy_task = tokio::spawn(proxy::serve_connections(
        proxy_listener,
        tls,
        proxy,
        limits,
        stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_upstream, stop_rx));

    shutdown_signal().await;
    tracing::info!(grace = %config.timeouts.shutdown_grace, "shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    if let Ok(graceful) = proxy_task.await {
        drain(graceful, config.timeouts.shutdown_grace.0).await;
    }
    Ok(())
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
