//! The per-node cache of project snapshots and keys, and the listener that
//! keeps it true: every catalog change sends `NOTIFY rakam_catalog` with the
//! project id in its transaction, and every node drops what it cached of
//! that project when the notification arrives. While the listening
//! connection is down nothing is served from the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use rakam_store_api::{KeyKind, ProjectId, ProjectInfo, ProjectSnapshot};
use tokio_postgres::{AsyncMessage, NoTls};

pub(crate) const CHANNEL: &str = "rakam_catalog";
/// Wait before reconnecting a lost listener.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// The listener asks the server this often whether it is still there: a
/// half-open connection would otherwise keep stale entries served for hours.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct CatalogCache {
    listening: AtomicBool,
    /// Grows on every invalidation: a load that started before one may
    /// carry what it dropped, and is not cached.
    epoch: AtomicU64,
    snapshots: Mutex<HashMap<ProjectId, Arc<ProjectSnapshot>>>,
    /// Key hash → project and kind. Only known keys: unknown ones would let
    /// anyone fill the memory.
    keys: Mutex<HashMap<String, (ProjectInfo, KeyKind)>>,
}

impl CatalogCache {
    /// A token to pass to `store_*` after loading.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn usable(&self, epoch: u64) -> bool {
        self.listening.load(Ordering::Acquire) && self.epoch() == epoch
    }

    pub fn snapshot(&self, project: &ProjectId) -> Option<Arc<ProjectSnapshot>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.snapshots.lock().get(project).cloned()
    }

    /// Caches a snapshot loaded since `epoch`, unless an invalidation came
    /// in between or a newer version is cached already (two loads may
    /// finish out of order).
    pub fn store_snapshot(&self, epoch: u64, snapshot: Arc<ProjectSnapshot>) {
        let mut snapshots = self.snapshots.lock();
        if !self.usable(epoch) {
            return;
        }
        let newer_cached = snapshots
            .get(&snapshot.project.id)
            .is_some_and(|cached| cached.version > snapshot.version);
        if !newer_cached {
            snapshots.insert(snapshot.project.id.clone(), snapshot);
        }
    }

    pub fn key(&self, hash: &str) -> Option<(ProjectInfo, KeyKind)> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.keys.lock().get(hash).cloned()
    }

    pub fn store_key(&self, epoch: u64, hash: String, found: (ProjectInfo, KeyKind)) {
        let mut keys = self.keys.lock();
        if self.usable(epoch) {
            keys.insert(hash, found);
        }
    }

    pub fn invalidate(&self, project: &ProjectId) {
        // Under the locks, so no store can slip in between.
        let mut snapshots = self.snapshots.lock();
        let mut keys = self.keys.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        snapshots.remove(project);
        keys.retain(|_, (info, _)| info.id != *project);
    }

    fn invalidate_all(&self) {
        let mut snapshots = self.snapshots.lock();
        let mut keys = self.keys.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        snapshots.clear();
        keys.clear();
    }

    fn set_listening(&self, listening: bool) {
        self.invalidate_all();
        self.listening.store(listening, Ordering::Release);
    }
}

/// Listens for catalog changes for as long as the cache lives.
pub(crate) fn spawn_listener(config: tokio_postgres::Config, cache: Weak<CatalogCache>) {
    tokio::spawn(async move {
        loop {
            if cache.strong_count() == 0 {
                return;
            }
            if let Err(error) = listen(&config, &cache).await {
                tracing::warn!(%error, "catalog change listener lost; snapshots are not cached until it is back");
            }
            if let Some(cache) = cache.upgrade() {
                cache.set_listening(false);
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    });
}

async fn listen(
    config: &tokio_postgres::Config,
    cache: &Weak<CatalogCache>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if sender.send(notification.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Anything cached before now may have missed a change.
    match cache.upgrade() {
        Some(cache) => cache.set_listening(true),
        None => return Ok(()),
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    loop {
        tokio::select! {
            notification = notifications.recv() => {
                let Some(project) = notification else { break };
                let Some(cache) = cache.upgrade() else {
                    return Ok(());
                };
                cache.invalidate(&ProjectId::new(project));
            }
            _ = ping.tick() => {
                if cache.strong_count() == 0 {
                    return Ok(());
                }
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error),
                    Err(_) => {
                        tracing::warn!("the catalog change listener stopped answering; reconnecting");
                        break;
                    }
                }
            }
        }
    }
    drop(client);
    // A half-open connection would keep its driver waiting for ever.
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, version: u64) -> Arc<ProjectSnapshot> {
        Arc::new(ProjectSnapshot {
            project: ProjectInfo {
                name: id.into(),
                id: ProjectId::new(id),
                created_at_ms: 0,
            },
            version,
            collections: Default::default(),
        })
    }

    #[test]
    fn nothing_is_served_while_not_listening() {
        let cache = CatalogCache::default();
        cache.store_snapshot(cache.epoch(), snapshot("a", 1));
        assert!(cache.snapshot(&ProjectId::new("a")).is_none());
        cache.set_listening(true);
        cache.store_snapshot(cache.epoch(), snapshot("a", 1));
        assert_eq!(
            cache.snapshot(&ProjectId::new("a")).map(|s| s.version),
            Some(1)
        );
        cache.set_listening(false);
        assert!(cache.snapshot(&ProjectId::new("a")).is_none());
    }

    #[test]
    fn a_load_older_than_an_invalidation_is_not_kept() {
        let cache = CatalogCache::default();
        cache.set_listening(true);
        let before = cache.epoch();
        cache.invalidate(&ProjectId::new("a"));
        cache.store_snapshot(before, snapshot("a", 1));
        assert!(cache.snapshot(&ProjectId::new("a")).is_none());
        cache.store_snapshot(cache.epoch(), snapshot("a", 2));
        assert_eq!(
            cache.snapshot(&ProjectId::new("a")).map(|s| s.version),
            Some(2)
        );
        cache.store_snapshot(cache.epoch(), snapshot("a", 1));
        assert_eq!(
            cache.snapshot(&ProjectId::new("a")).map(|s| s.version),
            Some(2),
            "an older load finishing last does not go back"
        );
        cache.invalidate(&ProjectId::new("a"));
        assert!(cache.snapshot(&ProjectId::new("a")).is_none());
    }
}
