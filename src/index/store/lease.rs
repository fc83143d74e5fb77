//! The leader lease as the index keeps it: taken when free, expired, or the writer holds the
//! index alone; renewed by its holder; and the fence that fails a batch of a holder that lost it.

use super::{IndexError, LEASE, Lease, UnixMillis, key, writes::Pending};

/// The lease for `holder`: renewed if theirs, taken over (a new epoch) if free, expired, or
/// `exclusive`.
pub(super) fn take_lease(
    pending: &mut Pending<'_>,
    name: &str,
    holder: &str,
    (at, until): (UnixMillis, UnixMillis),
    exclusive: bool,
) -> Result<(), IndexError> {
    let key = key(LEASE, &[name]);
    let current = pending.get::<Lease>(&key)?;
    let epoch = match &current {
        Some(lease) if lease.holder == holder => lease.epoch,
        Some(lease) if lease.expires > at && !exclusive => return Ok(()),
        Some(lease) => lease.epoch + 1,
        None => 1,
    };
    pending.put(
        key,
        &Lease {
            holder: holder.to_string(),
            epoch,
            expires: until,
        },
    );
    Ok(())
}

/// Fails the batch unless `holder` still holds the lease at `epoch`, unexpired at `at`.
pub(super) fn fence(
    pending: &mut Pending<'_>,
    name: &str,
    holder: &str,
    epoch: u64,
    at: UnixMillis,
) -> Result<(), IndexError> {
    match pending.get::<Lease>(&key(LEASE, &[name]))? {
        Some(lease) if lease.holder == holder && lease.epoch == epoch && lease.expires > at => {
            Ok(())
        }
        Some(lease) if lease.holder == holder && lease.epoch == epoch => Err(IndexError::Fenced(
            format!("the {name} lease expired before this write"),
        )),
        Some(lease) => Err(IndexError::Fenced(format!(
            "the {name} lease passed to {} (epoch {})",
            lease.holder, lease.epoch
        ))),
        None => Err(IndexError::Fenced(format!("nobody holds the {name} lease"))),
    }
}
