//! Query memory: every query draws from its own budget
//! (`query.memory_per_query_bytes`), and all queries together from the
//! server's (`query.memory_limit_bytes`). DataFusion's operators (sorts,
//! joins, aggregations) reserve here and spill when refused; the results a
//! request collects and the JSON it encodes reserve here too, so a wide
//! `SELECT` fails with a clear error instead of exhausting the machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// What a refusal names, so the client learns which limit it hit.
const PER_QUERY_SETTING: &str = "query.memory_per_query_bytes";
const SERVER_SETTING: &str = "query.memory_limit_bytes";

/// The memory all queries share.
#[derive(Debug, Clone)]
pub(crate) struct ServerMemory {
    pool: Arc<dyn MemoryPool>,
    limit: usize,
}

impl ServerMemory {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pool: Arc::new(GreedyMemoryPool::new(limit)),
            limit,
        }
    }

    /// A pool for one query, capped at `per_query` and drawing from this.
    pub(crate) fn for_query(&self, per_query: usize) -> Arc<QueryPool> {
        Arc::new(QueryPool {
            server: self.pool.clone(),
            server_limit: self.limit,
            used: AtomicUsize::new(0),
            limit: per_query,
        })
    }

    pub(crate) fn reserved(&self) -> usize {
        self.pool.reserved()
    }
}

#[derive(Debug)]
pub(crate) struct QueryPool {
    server: Arc<dyn MemoryPool>,
    server_limit: usize,
    used: AtomicUsize,
    limit: usize,
}

impl QueryPool {
    fn refuse(&self, setting: &str, limit: usize, additional: usize) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "the query needs more memory than {setting} allows ({limit} bytes; \
             {additional} more bytes were asked for with {} held)",
            self.used.load(Ordering::Relaxed)
        ))
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool ({} of {} bytes)",
            self.reserved(),
            self.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "rakam-query"
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.server.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.server.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional)
                    .filter(|&grown| grown <= self.limit)
            })
            .map_err(|_| self.refuse(PER_QUERY_SETTING, self.limit, additional))?;
        if self.server.try_grow(reservation, additional).is_err() {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(self.refuse(SERVER_SETTING, self.server_limit, additional));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Memory a query holds outside DataFusion's operators: the batches a
/// request collects and the bytes it encodes. Released when dropped.
#[derive(Debug)]
pub struct QueryMemory {
    reservation: MemoryReservation,
}

impl QueryMemory {
    pub(crate) fn new(pool: &Arc<QueryPool>) -> Self {
        let pool: Arc<dyn MemoryPool> = pool.clone();
        Self {
            reservation: MemoryConsumer::new("query results").register(&pool),
        }
    }

    /// Holds `bytes` more, or fails naming the limit it would go over.
    pub fn grow(&mut self, bytes: usize) -> Result<(), crate::QueryError> {
        self.reservation
            .try_grow(bytes)
            .map_err(crate::QueryError::from_datafusion)
    }

    pub fn held(&self) -> usize {
        self.reservation.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_held_to_its_own_limit_and_the_servers() {
        let server = ServerMemory::new(1000);
        let first = server.for_query(600);
        let second = server.for_query(600);
        let mut a = QueryMemory::new(&first);
        let mut b = QueryMemory::new(&second);
        a.grow(500).expect("in a test");
        let over_own = a.grow(200).expect_err("in a test").to_string();
        assert!(over_own.contains(PER_QUERY_SETTING), "{over_own}");
        b.grow(450).expect("in a test");
        let over_server = b.grow(100).expect_err("in a test").to_string();
        assert!(over_server.contains(SERVER_SETTING), "{over_server}");
        assert_eq!(server.reserved(), 950);
        drop(a);
        assert_eq!(server.reserved(), 450);
        b.grow(100).expect("in a test");
        assert_eq!(b.held(), 550);
    }
}
