//! Checking the write-ahead log offline (`rakam wal check`) and, when the
//! operator asks for it (`storage.embedded.wal_recovery = "quarantine"`),
//! starting despite damage: every damaged byte range is moved to
//! `wal/quarantine/` and the records around it are kept.
//!
//! A torn tail (the newest segment ending in a partly written record that
//! nothing intact follows) is not damage: that record was never
//! acknowledged. Damage is bytes that fail their checksum with intact
//! records after them, or anywhere in an older segment, and missing
//! segments; all of them held acknowledged appends.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rakam_store_api::StoreError;

use crate::fs_util::{create_dir_all_synced, write_atomically};
use crate::wal::list_segments;
use crate::wal_replay::{intact_record_after, scan_records_from};

/// Bytes of a segment that hold no readable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment: PathBuf,
    pub from_byte: u64,
    /// Where the next intact record starts, or the segment's end.
    pub to_byte: u64,
    /// Appends lost, by sequence, when the next intact record tells.
    pub lost_sequences: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalProblem {
    Damaged(DamagedRange),
    /// Sequences no segment holds (a segment was deleted or lost).
    Missing {
        first: u64,
        last: u64,
    },
}

impl fmt::Display for WalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Damaged(range) => {
                write!(
                    f,
                    "{} is damaged from byte {} to {} ({} bytes)",
                    range.segment.display(),
                    range.from_byte,
                    range.to_byte,
                    range.to_byte - range.from_byte
                )?;
                match range.lost_sequences {
                    Some((first, last)) => write!(
                        f,
                        ": {} acknowledged appends (sequences {first} to {last}) are in it",
                        last - first + 1
                    ),
                    None => write!(f, ": the acknowledged appends in it cannot be counted"),
                }
            }
            Self::Missing { first, last } => write!(
                f,
                "no segment holds sequences {first} to {last}: {} acknowledged appends are missing",
                last - first + 1
            ),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WalReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub last_sequence: Option<u64>,
    /// A partly written last record, never acknowledged (cut at start-up).
    pub torn_tail_bytes: u64,
    pub problems: Vec<WalProblem>,
}

impl WalReport {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads every segment of `wal_dir` and reports what it holds and what is
/// damaged or missing. Changes nothing.
pub fn check_wal(wal_dir: &Path) -> Result<WalReport, StoreError> {
    let segments = list_segments(wal_dir)?;
    let mut report = WalReport {
        segments: segments.len(),
        ..WalReport::default()
    };
    if let (Some(deleted_through), Some((first, _))) = (
        crate::maintenance::read_deleted_through(wal_dir)?,
        segments.first(),
    ) {
        if *first > deleted_through + 1 {
            report.problems.push(WalProblem::Missing {
                first: deleted_through + 1,
                last: first - 1,
            });
        }
    }
    let mut expected_next: Option<u64> = None;
    for (index, (first_sequence, path)) in segments.iter().enumerate() {
        if let Some(expected) = expected_next {
            if *first_sequence > expected {
                report.problems.push(WalProblem::Missing {
                    first: expected,
                    last: first_sequence - 1,
                });
            }
        }
        let is_last = index + 1 == segments.len();
        let segment = check_segment(path, *first_sequence, is_last)?;
        report.records += segment.records;
        report.bytes += segment.file_len;
        report.torn_tail_bytes += segment.torn_tail_bytes;
        report
            .problems
            .extend(segment.damage.into_iter().map(WalProblem::Damaged));
        if segment.last_sequence.is_some() {
            report.last_sequence = segment.last_sequence;
        }
        expected_next = Some(
            segment
                .last_sequence
                .map_or(*first_sequence, |last| last + 1),
        );
    }
    Ok(report)
}

struct SegmentCheck {
    records: u64,
    file_len: u64,
    last_sequence: Option<u64>,
    torn_tail_bytes: u64,
    damage: Vec<DamagedRange>,
    /// Byte ranges of intact records, in order.
    intact: Vec<(u64, u64)>,
}

fn check_segment(
    path: &Path,
    first_sequence: u64,
    is_last: bool,
) -> Result<SegmentCheck, StoreError> {
    let mut check = SegmentCheck {
        records: 0,
        file_len: 0,
        last_sequence: None,
        torn_tail_bytes: 0,
        damage: Vec::new(),
        intact: Vec::new(),
    };
    let mut start = 0;
    loop {
        let scan = scan_records_from(path, start, |_, _| {
            check.records += 1;
            Ok(())
        })?;
        check.file_len = scan.file_len;
        if scan.valid_len > start {
            check.intact.push((start, scan.valid_len));
        }
        if scan.last_sequence.is_some() {
            check.last_sequence = scan.last_sequence;
        }
        if scan.valid_len >= scan.file_len {
            return Ok(check);
        }
        let before = check
            .last_sequence
            .unwrap_or(first_sequence.saturating_sub(1));
        match intact_record_after(path, scan.valid_len, Some(before))? {
            Some(next) => {
                let mut next_sequence = None;
                scan_records_from(path, next, |sequence, _| {
                    if next_sequence.is_none() {
                        next_sequence = Some(sequence);
                    }
                    Ok(())
                })?;
                check.damage.push(DamagedRange {
                    segment: path.to_path_buf(),
                    from_byte: scan.valid_len,
                    to_byte: next,
                    lost_sequences: next_sequence
                        .filter(|&n| n > before + 1)
                        .map(|n| (before + 1, n - 1)),
                });
                start = next;
            }
            None if is_last => {
                check.torn_tail_bytes = scan.file_len - scan.valid_len;
                return Ok(check);
            }
            None => {
                check.damage.push(DamagedRange {
                    segment: path.to_path_buf(),
                    from_byte: scan.valid_len,
                    to_byte: scan.file_len,
                    lost_sequences: None,
                });
                return Ok(check);
            }
        }
    }
}

/// Moves every damaged range of every segment to `wal/quarantine/` and
/// rewrites the segment with its intact records only. Returns what was
/// moved, for the log and `/health`.
pub fn quarantine_damage(wal_dir: &Path) -> Result<Vec<String>, StoreError> {
    let segments = list_segments(wal_dir)?;
    let quarantine = wal_dir.join("quarantine");
    let mut moved = Vec::new();
    for (index, (first_sequence, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let check = check_segment(path, *first_sequence, is_last)?;
        if check.damage.is_empty() {
            continue;
        }
        let bytes =
            fs::read(path).map_err(StoreError::io(format!("reading {}", path.display())))?;
        create_dir_all_synced(&quarantine)?;
        let name = path
            .file_name()
            .map_or_else(|| "segment".into(), |n| n.to_string_lossy().to_string());
        for range in &check.damage {
            let (from, to) = (range.from_byte as usize, range.to_byte as usize);
            let target = quarantine.join(format!("{name}.{from}-{to}.bin"));
            write_atomically(&target, &bytes[from..to.min(bytes.len())])?;
            moved.push(format!(
                "{} (moved to {})",
                WalProblem::Damaged(range.clone()),
                target.display()
            ));
        }
        let mut kept = Vec::with_capacity(bytes.len());
        for (from, to) in &check.intact {
            kept.extend_from_slice(&bytes[*from as usize..(*to as usize).min(bytes.len())]);
        }
        write_atomically(path, &kept)?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{encode_record, segment_path};

    fn segment(dir: &Path, first: u64, count: u64) -> PathBuf {
        let mut bytes = Vec::new();
        for sequence in first..first + count {
            encode_record(sequence, &[7_u8; 100], &mut bytes);
        }
        let path = segment_path(dir, first);
        fs::write(&path, bytes).expect("in a test");
        path
    }

    #[test]
    fn damage_gaps_and_torn_tails_are_told_apart() {
        let dir = tempfile::tempdir().expect("in a test");
        let first = segment(dir.path(), 1, 10);
        segment(dir.path(), 11, 10);
        assert!(check_wal(dir.path()).expect("in a test").is_healthy());

        // Damage in the middle of the older segment: records 4 and 5.
        let mut bytes = fs::read(&first).expect("in a test");
        let record = bytes.len() / 10;
        for byte in &mut bytes[3 * record + 20..4 * record + 30] {
            *byte ^= 0xff;
        }
        fs::write(&first, &bytes).expect("in a test");
        // A missing segment after the second, and a torn tail on the newest.
        let newest = segment(dir.path(), 30, 2);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .expect("in a test");
        std::io::Write::write_all(&mut file, &[1, 2, 3]).expect("in a test");
        drop(file);

        let report = check_wal(dir.path()).expect("in a test");
        assert_eq!(report.torn_tail_bytes, 3);
        let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(report.problems.len(), 2, "{text:?}");
        assert!(
            text[0].contains("2 acknowledged appends (sequences 4 to 5)"),
            "{text:?}"
        );
        assert!(text[1].contains("sequences 21 to 29"), "{text:?}");

        let moved = quarantine_damage(dir.path()).expect("in a test");
        assert_eq!(moved.len(), 1, "{moved:?}");
        let after = check_wal(dir.path()).expect("in a test");
        assert_eq!(after.records, 8 + 10 + 2);
        assert_eq!(
            after.problems.len(),
            1,
            "the gap stays reported: {:?}",
            after.problems
        );
        assert_eq!(
            fs::read_dir(dir.path().join("quarantine"))
                .expect("in a test")
                .count(),
            1
        );
    }
}
