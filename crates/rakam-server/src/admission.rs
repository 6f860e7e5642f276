//! Backpressure: a global budget of request bytes in flight. A request
//! holds a ticket for the bytes it has read (after decompression) until it
//! is answered; a request that would go over the budget is refused at once
//! (503 with `Retry-After`), so memory stays bounded under any load and the
//! write queue behind it is bounded too: every queued append belongs to a
//! request holding a ticket.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count kibibytes: a semaphore counts at most `u32::MAX` per call.
const UNIT: usize = 1024;

#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit_bytes: usize,
}

/// The bytes one request holds; given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    permits: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    held_units: usize,
}

impl Admission {
    pub fn new(limit_bytes: usize) -> Self {
        let units = limit_bytes.div_ceil(UNIT).max(1);
        Self {
            permits: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            limit_bytes,
        }
    }

    pub fn ticket(&self) -> Ticket {
        Ticket {
            permits: self.permits.clone(),
            held: None,
            held_units: 0,
        }
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Bytes held by requests now.
    pub fn in_flight_bytes(&self) -> usize {
        let total = self.limit_bytes.div_ceil(UNIT).max(1);
        total.saturating_sub(self.permits.available_permits()) * UNIT
    }
}

impl Ticket {
    /// Holds at least `bytes`; false when the budget has no room for them
    /// (what the ticket held already stays held).
    pub fn hold(&mut self, bytes: usize) -> bool {
        let wanted = bytes.div_ceil(UNIT);
        if wanted <= self.held_units {
            return true;
        }
        let more = wanted - self.held_units;
        let Ok(more_u32) = u32::try_from(more) else {
            return false;
        };
        match self.permits.clone().try_acquire_many_owned(more_u32) {
            Ok(permit) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                self.held_units = wanted;
                true
            }
            Err(_) => false,
        }
    }

    pub fn held_bytes(&self) -> usize {
        self.held_units * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let admission = Admission::new(10 * UNIT);
        let mut first = admission.ticket();
        assert!(first.hold(4 * UNIT));
        assert!(first.hold(6 * UNIT), "a ticket grows");
        let mut second = admission.ticket();
        assert!(second.hold(4 * UNIT));
        assert!(!second.hold(5 * UNIT), "over the budget");
        assert_eq!(second.held_bytes(), 4 * UNIT, "what was held stays");
        assert_eq!(admission.in_flight_bytes(), 10 * UNIT);
        drop(first);
        assert!(second.hold(10 * UNIT));
        drop(second);
        assert_eq!(admission.in_flight_bytes(), 0);
    }
}
