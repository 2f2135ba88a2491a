//! Call slots: how many tool calls run at once, in all and per tenant, and how long a
//! call waits for one.
//!
//! Every call takes a tenant slot first, then a host slot. A tenant flooding the host
//! therefore holds at most its share of host slots, and its extra calls queue on its own
//! semaphore, not in the host's queue, so other tenants' calls find a host slot as soon
//! as one frees (tokio's semaphore is first-come first-served). Waiting is bounded: a
//! call that finds no slot within the wait is refused with [`CallError::Busy`], which
//! the API answers `429` with `Retry-After`, rather than piling up without end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{CallError, SlotScope};

/// Past this many tenants in the map, idle tenants' entries are dropped.
const PRUNE_ABOVE: usize = 1024;

pub(crate) struct CallSlots {
    host: Arc<Semaphore>,
    host_size: u32,
    per_tenant: u32,
    wait: Duration,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot; released when dropped.
pub(crate) struct Slot {
    _tenant: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

impl CallSlots {
    pub(crate) fn new(host: u32, per_tenant: u32, wait: Duration) -> Self {
        let host = host.max(1);
        Self {
            host: Arc::new(Semaphore::new(host as usize)),
            host_size: host,
            per_tenant: per_tenant.clamp(1, host),
            wait,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn tenant(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(semaphore) = tenants.get(tenant) {
            return Arc::clone(semaphore);
        }
        if tenants.len() >= PRUNE_ABOVE {
            // Idle: nobody holds a clone (no call waiting or running) and all permits free.
            let per_tenant = self.per_tenant as usize;
            tenants.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < per_tenant);
        }
        let semaphore = Arc::new(Semaphore::new(self.per_tenant as usize));
        tenants.insert(tenant.to_owned(), Arc::clone(&semaphore));
        semaphore
    }

    /// A slot for a call of `tenant`, or [`CallError::Busy`] after the bounded wait.
    pub(crate) async fn acquire(&self, tenant: &str) -> Result<Slot, CallError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let busy = |scope, limit| CallError::Busy {
            scope,
            limit,
            waited: self.wait,
            retry_after: retry_after(self.wait),
        };
        let tenant_slot =
            match tokio::time::timeout_at(deadline, self.tenant(tenant).acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(busy(SlotScope::Tenant, self.per_tenant)),
            };
        let host_slot =
            match tokio::time::timeout_at(deadline, Arc::clone(&self.host).acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(busy(SlotScope::Host, self.host_size)),
            };
        Ok(Slot {
            _tenant: tenant_slot,
            _host: host_slot,
        })
    }
}

/// When to try again: the wait rounded up to whole seconds, at least one.
fn retry_after(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_millis().div_ceil(1000).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_waits_are_bounded() {
        let slots = CallSlots::new(4, 2, Duration::from_millis(50));
        let a1 = slots.acquire("a").await.unwrap();
        let _a2 = slots.acquire("a").await.unwrap();
        let refused = slots.acquire("a").await.err().unwrap();
        assert!(
            matches!(
                refused,
                CallError::Busy {
                    scope: SlotScope::Tenant,
                    limit: 2,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(
            refused
                .to_string()
                .contains("max_concurrent_calls_per_tenant"),
            "{refused}"
        );
        // Tenant b still gets the host's remaining slots.
        let _b1 = slots.acquire("b").await.unwrap();
        let _b2 = slots.acquire("b").await.unwrap();
        let refused = slots.acquire("c").await.err().unwrap();
        assert!(
            matches!(
                refused,
                CallError::Busy {
                    scope: SlotScope::Host,
                    ..
                }
            ),
            "{refused:?}"
        );
        drop(a1);
        slots.acquire("c").await.unwrap();
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(
            retry_after(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_after(Duration::from_millis(2500)),
            Duration::from_secs(3)
        );
    }
}
