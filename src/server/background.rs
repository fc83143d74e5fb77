//! What the control runtime serves besides the proxy: the admin API's state, and when
//! recording, the index writer, image-config reads, sync and the cleanup schedule.

use std::sync::Arc;

use tokio::sync::watch;

use super::{CONFIG_QUEUE, CONFIG_READERS, Recording};
use crate::{
    admin,
    config::Config,
    configs,
    events::{self, BatchPolicy, Recorder},
    linking::Linker,
    registry::RegistryClient,
    sync,
    upstream::Upstream,
};

/// What the admin listener serves from: the APIs that need the index exist only when
/// recording, the link and operator APIs only with their tokens.
pub(super) fn admin_state(
    shared: &Arc<Config>,
    upstream: Upstream,
    client: &Arc<RegistryClient>,
    recording: Option<&Recording>,
    index_health: &events::IndexHealth,
    linker: &Linker,
) -> Arc<admin::AdminState> {
    let config = &**shared;
    Arc::new(admin::AdminState {
        notifications: match (&config.admin.notification_token, recording) {
            (Some(token), Some(recording)) => {
                Some(Arc::new(crate::notifications::Notifications::new(
                    token.clone(),
                    client.clone(),
                    recording.index.clone(),
                    recording.events.clone(),
                    Arc::new(linker.clone()),
                )))
            }
            _ => None,
        },
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
                leadership: recording.leadership.clone(),
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

/// The control runtime's work besides the admin listener, when recording: the index writer,
/// image-config reads, sync, and the cleanup schedule.
pub(super) struct Background {
    pub config: Arc<Config>,
    pub client: Arc<RegistryClient>,
    pub linker: Linker,
    pub health: events::IndexHealth,
    pub stop: watch::Receiver<bool>,
}

impl Background {
    /// Spawns it all; returns the index writer, which ends once `finish` fires and the queue
    /// is applied.
    pub fn spawn(
        self,
        control: &tokio::runtime::Runtime,
        recording: Recording,
        finish: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<events::WriterStats> {
        let Recording {
            index,
            mirror,
            leadership,
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
                leadership: leadership.clone(),
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
                leadership,
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
