//! Leadership among the processes sharing an index: exactly one at a time runs cleanup and
//! sync. The leader holds a lease in the index, renewed in the background while the process
//! lives; another takes it over only once it expired (a leader that died), at its next
//! schedule. Every audit entry written before a deletion carries a fence ([`Leadership::fence`])
//! that the index checks in the same batch, so a leader that lost the lease — paused past it,
//! cut off from the database — cannot record, and so does not make, another deletion.
//!
//! With the embedded index there is one process: it always leads, through the same code.
//!
//! Owns: the lease's holder name, claiming and renewing it. May call: `index`.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use crate::index::{Index, IndexError, UnixMillis, Write};

/// The one lease: cleanup and sync follow the same leader.
pub const LEASE: &str = "leader";

/// One leadership term: the epoch the lease had when this process took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub epoch: u64,
}

pub struct Leadership {
    index: Arc<dyn Index>,
    holder: String,
    ttl: Duration,
    /// This process holds the index alone (the embedded engine): a lease left by another
    /// process is a dead one's.
    exclusive: bool,
    renewing: std::sync::Mutex<bool>,
}

impl Leadership {
    /// `exclusive`: no other process can hold `index` now (the embedded engine's lock).
    pub fn new(index: Arc<dyn Index>, ttl: Duration, exclusive: bool) -> Arc<Self> {
        Arc::new(Self {
            index,
            holder: holder_name(),
            ttl,
            exclusive,
            renewing: std::sync::Mutex::new(false),
        })
    }

    /// This process's name in the lease: host, pid and a random part (a restarted process
    /// with the same pid is another holder).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease, or renews it when it is already ours; `None` when another process
    /// holds it. Once held, it is renewed in the background (every third of its time) until
    /// this handle is dropped.
    pub fn claim(self: &Arc<Self>) -> Result<Option<Term>, IndexError> {
        let term = self.renew()?;
        if term.is_some() {
            self.keep_renewing();
        }
        Ok(term)
    }

    fn renew(&self) -> Result<Option<Term>, IndexError> {
        let now = UnixMillis::now();
        let until = UnixMillis(now.0.saturating_add(self.ttl.as_millis() as u64));
        self.index.apply(&[Write::TakeLease {
            name: LEASE.into(),
            holder: self.holder.clone(),
            at: now,
            until,
            exclusive: self.exclusive,
        }])?;
        Ok(self
            .index
            .lease(LEASE)?
            .filter(|lease| lease.holder == self.holder && lease.expires > now)
            .map(|lease| Term { epoch: lease.epoch }))
    }

    fn keep_renewing(self: &Arc<Self>) {
        let mut renewing = self.renewing.lock().unwrap_or_else(|e| e.into_inner());
        if *renewing {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *renewing = true;
        let leadership: Weak<Self> = Arc::downgrade(self);
        let every = self.ttl / 3;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(leadership) = leadership.upgrade() else {
                    return;
                };
                let renewed = tokio::task::spawn_blocking(move || {
                    let renewed = leadership.renew();
                    (leadership, renewed)
                })
                .await;
                let Ok((leadership, renewed)) = renewed else {
                    return;
                };
                match renewed {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(
                            holder = leadership.holder,
                            "the leader lease passed to another process; cleanup and sync run there"
                        );
                        *leadership
                            .renewing
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = false;
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "renewing the leader lease failed; retrying")
                    }
                }
            }
        });
    }

    /// The write that makes a batch fail unless this process still leads in `term`.
    pub fn fence(&self, term: Term) -> Write {
        Write::Fence {
            name: LEASE.into(),
            holder: self.holder.clone(),
            epoch: term.epoch,
            at: UnixMillis::now(),
        }
    }

    /// Gives the lease up (a clean shutdown), so another replica need not wait for it to
    /// expire.
    pub fn resign(&self) {
        let dropped = self.index.apply(&[Write::DropLease {
            name: LEASE.into(),
            holder: self.holder.clone(),
        }]);
        if let Err(error) = dropped {
            tracing::warn!(%error, "giving up the leader lease failed; it expires by itself");
        }
    }
}

fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        u32::from_be_bytes(random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::in_memory;

    #[test]
    fn one_holder_leads_and_a_fence_proves_it() {
        let index: Arc<dyn Index> = Arc::new(in_memory());
        let first = Leadership::new(index.clone(), Duration::from_secs(30), false);
        let second = Leadership::new(index.clone(), Duration::from_secs(30), false);
        assert_ne!(first.holder(), second.holder());
        let term = first.claim().unwrap().expect("a free lease is taken");
        assert_eq!(second.claim().unwrap(), None, "held by the first");
        assert_eq!(first.claim().unwrap(), Some(term), "renewed, same term");
        index.apply(&[first.fence(term)]).unwrap();
        assert!(matches!(
            index.apply(&[second.fence(Term { epoch: term.epoch })]),
            Err(IndexError::Fenced(_))
        ));
        first.resign();
        let next = second.claim().unwrap().expect("resigned: free");
        assert!(next.epoch > term.epoch);
        assert!(matches!(
            index.apply(&[first.fence(term)]),
            Err(IndexError::Fenced(_))
        ));
    }
}
