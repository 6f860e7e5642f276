//! The write-ahead log: checksummed records in numbered segment files,
//! written by one thread that commits every waiting request with a single
//! fsync (group commit).
//!
//! Record layout (little endian): payload length u32, CRC-32 u32 of
//! (sequence ++ payload), sequence u64, payload. A record whose length or
//! checksum does not hold marks the torn end of the log: replay stops there
//! and the file is cut back, so nothing is ever half-applied.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rakam_store_api::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::fs_util::sync_dir;
pub(crate) use crate::wal_replay::{replay_segment, scan_records};

pub(crate) const HEADER_LEN: usize = 16;
/// The largest payload a record's 32-bit length can state.
pub(crate) const MAX_RECORD_BYTES: usize = u32::MAX as usize;
const SEGMENT_SUFFIX: &str = ".wal";
/// Upper bound of one group commit, so one fsync never waits on gigabytes.
const MAX_GROUP_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging: an acknowledged event survives power loss.
    Fsync,
    /// Hand to the OS before acknowledging: survives a process crash, not a
    /// power loss. Faster on slow disks.
    Os,
}

pub(crate) fn segment_path(dir: &Path, first_sequence: u64) -> PathBuf {
    dir.join(format!("{first_sequence:020}{SEGMENT_SUFFIX}"))
}

/// Segment files in sequence order, with the first sequence each may hold.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(StoreError::io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("listing the wal"))?;
        let file_name = entry.file_name();
        let Some(stem) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
        else {
            continue;
        };
        if let Ok(first_sequence) = stem.parse::<u64>() {
            segments.push((first_sequence, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

pub fn encode_record(sequence: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(payload);
}

struct AppendRequest {
    sequence: u64,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle to the group-commit thread.
pub(crate) struct WalWriter {
    sender: parking_lot::Mutex<Option<mpsc::UnboundedSender<AppendRequest>>>,
    durable_sequence: Arc<AtomicU64>,
    /// First sequence of the segment being written; it is never deleted.
    current_segment: Arc<AtomicU64>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Why the WAL refuses writes until a restart, once it does.
    failure: Arc<parking_lot::Mutex<Option<String>>>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field(
                "durable_sequence",
                &self.durable_sequence.load(Ordering::Acquire),
            )
            .finish()
    }
}

impl WalWriter {
    /// Starts a new segment whose first record is `next_sequence`.
    pub(crate) fn start(
        dir: PathBuf,
        next_sequence: u64,
        durability: Durability,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        let durable_sequence = Arc::new(AtomicU64::new(next_sequence.saturating_sub(1)));
        let current_segment = Arc::new(AtomicU64::new(next_sequence));
        let segment = Segment::create(&dir, next_sequence)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let thread_durable = durable_sequence.clone();
        let thread_segment = current_segment.clone();
        let failure = Arc::new(parking_lot::Mutex::new(None));
        let thread_failure = failure.clone();
        let thread = std::thread::Builder::new()
            .name("rakam-wal".into())
            .spawn(move || {
                let mut committer = GroupCommitter {
                    dir,
                    segment,
                    durability,
                    segment_bytes,
                    durable_sequence: thread_durable,
                    current_segment: thread_segment,
                    failure: thread_failure,
                };
                committer.run(receiver);
            })
            .map_err(StoreError::io("starting the wal thread"))?;
        Ok(Self {
            sender: parking_lot::Mutex::new(Some(sender)),
            durable_sequence,
            current_segment,
            thread: parking_lot::Mutex::new(Some(thread)),
            failure,
        })
    }

    /// Why the WAL refuses every write until a restart, if it does.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Queues a record. Callers must submit in sequence order; the returned
    /// receiver resolves once the record is durable.
    pub(crate) fn submit(
        &self,
        sequence: u64,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), String>>, StoreError> {
        let (done, receiver) = oneshot::channel();
        let guard = self.sender.lock();
        let sender = guard.as_ref().ok_or(StoreError::ShuttingDown)?;
        sender
            .send(AppendRequest {
                sequence,
                payload,
                done,
            })
            .map_err(|_| StoreError::ShuttingDown)?;
        Ok(receiver)
    }

    pub(crate) fn current_segment(&self) -> u64 {
        self.current_segment.load(Ordering::Acquire)
    }

    /// Every record up to this sequence is durable.
    pub(crate) fn durable_sequence(&self) -> u64 {
        self.durable_sequence.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) {
        drop(self.sender.lock().take());
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the wal thread panicked");
            }
        }
    }
}

struct Segment {
    file: File,
    path: PathBuf,
    length: u64,
}

impl Segment {
    fn create(dir: &Path, first_sequence: u64) -> Result<Self, StoreError> {
        let path = segment_path(dir, first_sequence);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(format!("creating {}", path.display())))?;
        let length = file
            .metadata()
            .map_err(StoreError::io("reading wal segment size"))?
            .len();
        sync_dir(dir)?;
        Ok(Self { file, path, length })
    }
}

enum WriteFailure {
    /// Nothing of the group is in the segment: the next group may go on.
    CutBack(String),
    /// Only a restart is safe.
    Fatal(String),
}

struct GroupCommitter {
    dir: PathBuf,
    segment: Segment,
    durability: Durability,
    segment_bytes: u64,
    durable_sequence: Arc<AtomicU64>,
    current_segment: Arc<AtomicU64>,
    /// Set by a failed fsync, or a failed write that could not be cut back.
    /// From then on every append fails (fail-stop): after an fsync error the
    /// kernel may have dropped dirty pages, so only a restart (which replays
    /// what is really on disk) is safe. A write that failed (a full disk)
    /// and was cut back fails its group only: the next group may succeed
    /// once there is room again.
    failure: Arc<parking_lot::Mutex<Option<String>>>,
}

impl GroupCommitter {
    fn run(&mut self, mut receiver: mpsc::UnboundedReceiver<AppendRequest>) {
        let mut buffer = Vec::with_capacity(1 << 20);
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            let mut group_bytes = group[0].payload.len();
            while group_bytes < MAX_GROUP_BYTES {
                match receiver.try_recv() {
                    Ok(next) => {
                        group_bytes += next.payload.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            if let Some(failure) = self.failure.lock().clone() {
                for request in group {
                    let _ = request.done.send(Err(failure.clone()));
                }
                continue;
            }
            buffer.clear();
            for request in &group {
                encode_record(request.sequence, &request.payload, &mut buffer);
            }
            let last_sequence = group.last().map_or(0, |request| request.sequence);
            let outcome = match self.write(&buffer) {
                Ok(()) => {
                    self.durable_sequence
                        .store(last_sequence, Ordering::Release);
                    Ok(())
                }
                Err(WriteFailure::CutBack(failure)) => {
                    tracing::error!(%failure, "a wal write failed and was cut back; later writes are tried again");
                    Err(failure)
                }
                Err(WriteFailure::Fatal(failure)) => {
                    tracing::error!(%failure, "the wal is failing: refusing writes until restart");
                    *self.failure.lock() = Some(failure.clone());
                    Err(failure)
                }
            };
            for request in group {
                let _ = request.done.send(outcome.clone());
            }
            if outcome.is_ok() && self.segment.length >= self.segment_bytes {
                if let Err(error) = self.rotate(last_sequence + 1) {
                    tracing::error!(%error, "cannot start a new wal segment");
                    *self.failure.lock() = Some(format!("cannot start a new wal segment: {error}"));
                }
            }
        }
        if let Err(error) = self.segment.file.sync_all() {
            tracing::error!(%error, "final wal sync failed");
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), WriteFailure> {
        if let Err(error) = self.segment.file.write_all(bytes) {
            tracing::error!(%error, segment = %self.segment.path.display(), "wal write failed");
            let message = format!("wal write failed: {error}");
            // Cut the partial write so that later records stay readable;
            // if even that fails, the segment's end is unknown.
            return match self.segment.file.set_len(self.segment.length) {
                Ok(()) => Err(WriteFailure::CutBack(message)),
                Err(_) => Err(WriteFailure::Fatal(message)),
            };
        }
        if self.durability == Durability::Fsync {
            if let Err(error) = self.segment.file.sync_data() {
                tracing::error!(%error, segment = %self.segment.path.display(), "wal fsync failed");
                let _ = self.segment.file.set_len(self.segment.length);
                return Err(WriteFailure::Fatal(format!("wal fsync failed: {error}")));
            }
        }
        self.segment.length += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, next_sequence: u64) -> Result<(), StoreError> {
        self.segment
            .file
            .sync_all()
            .map_err(StoreError::io("closing wal segment"))?;
        self.segment = Segment::create(&self.dir, next_sequence)?;
        self.current_segment.store(next_sequence, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = WalWriter::start(dir.path().to_path_buf(), 1, Durability::Fsync, 1 << 30)
            .expect("start");
        let mut waits = Vec::new();
        for sequence in 1..=50_u64 {
            let payload = vec![sequence as u8; sequence as usize];
            waits.push(writer.submit(sequence, payload).expect("submit"));
        }
        for wait in waits {
            wait.await.expect("answer").expect("durable");
        }
        assert_eq!(writer.durable_sequence(), 50);
        writer.stop();

        let segments = list_segments(dir.path()).expect("list");
        assert_eq!(segments.len(), 1);
        let path = &segments[0].1;
        // Tear the last record in half, as a crash mid-write would.
        let length = fs::metadata(path).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| file.set_len(length - 20))
            .expect("truncate");
        let mut seen = Vec::new();
        let last = replay_segment(path, true, |sequence, payload| {
            assert_eq!(payload.len() as u64, sequence);
            seen.push(sequence);
            Ok(())
        })
        .expect("replay");
        assert_eq!(last, Some(49));
        assert_eq!(seen, (1..=49).collect::<Vec<_>>());
        // A second replay sees the same records: the cut was persisted.
        let again = replay_segment(path, true, |_, _| Ok(())).expect("replay again");
        assert!(
            replay_segment(path, false, |_, _| Ok(())).is_ok(),
            "the cut tail is gone"
        );
        assert_eq!(again, Some(49));
    }

    #[tokio::test]
    async fn damage_with_intact_records_after_it_is_refused_not_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = WalWriter::start(dir.path().to_path_buf(), 1, Durability::Fsync, 1 << 30)
            .expect("start");
        let mut waits = Vec::new();
        for sequence in 1..=50_u64 {
            waits.push(writer.submit(sequence, vec![7_u8; 100]).expect("submit"));
        }
        for wait in waits {
            wait.await.expect("answer").expect("durable");
        }
        writer.stop();
        let path = list_segments(dir.path()).expect("list")[0].1.clone();
        let mut bytes = fs::read(&path).expect("read");
        let length = bytes.len();
        // Eight flipped bytes at 10 %: records after them are intact.
        for byte in &mut bytes[length / 10..length / 10 + 8] {
            *byte ^= 0xff;
        }
        fs::write(&path, &bytes).expect("write");
        let error = replay_segment(&path, true, |_, _| Ok(())).expect_err("refused");
        assert!(error.to_string().contains("damaged"), "{error}");
        assert_eq!(
            fs::metadata(&path).expect("meta").len() as usize,
            length,
            "nothing cut"
        );
    }

    #[tokio::test]
    async fn corrupt_bytes_end_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer =
            WalWriter::start(dir.path().to_path_buf(), 7, Durability::Os, 1 << 30).expect("start");
        for sequence in 7..10_u64 {
            writer
                .submit(sequence, b"payload".to_vec())
                .expect("submit")
                .await
                .expect("answer")
                .expect("durable");
        }
        writer.stop();
        let path = segment_path(dir.path(), 7);
        let original = fs::read(&path).expect("read");
        let record = HEADER_LEN + 7;
        // The second record damaged: the third is intact, so the damage is
        // not a torn tail and nothing may be cut.
        let mut bytes = original.clone();
        bytes[record + HEADER_LEN + 2] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        assert!(
            replay_segment(&path, false, |_, _| Ok(())).is_err(),
            "an older segment must not be cut"
        );
        assert!(
            replay_segment(&path, true, |_, _| Ok(())).is_err(),
            "nor the newest, when intact records follow the damage"
        );
        // The last record damaged: what a torn write looks like; it is cut.
        let mut bytes = original;
        bytes[2 * record + HEADER_LEN + 2] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let mut seen = Vec::new();
        replay_segment(&path, true, |sequence, _| {
            seen.push(sequence);
            Ok(())
        })
        .expect("replay");
        assert_eq!(seen, [7, 8]);
    }

    #[tokio::test]
    async fn segments_rotate_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer =
            WalWriter::start(dir.path().to_path_buf(), 1, Durability::Os, 100).expect("start");
        for sequence in 1..=5_u64 {
            writer
                .submit(sequence, vec![0; 90])
                .expect("submit")
                .await
                .expect("answer")
                .expect("durable");
        }
        writer.stop();
        let firsts: Vec<u64> = list_segments(dir.path())
            .expect("list")
            .into_iter()
            .map(|(first, _)| first)
            .collect();
        assert_eq!(firsts, [1, 2, 3, 4, 5, 6]);
    }
}
