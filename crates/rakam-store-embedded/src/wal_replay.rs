//! Reading the write-ahead log back: at start (replay, which cuts a torn
//! tail and refuses damage), and while running (a scan that changes
//! nothing, for append observers).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rakam_store_api::StoreError;

use crate::wal::HEADER_LEN;

/// Reads every intact record of a segment, in order. A torn or corrupt tail
/// is cut off the file. Returns the highest sequence seen.
pub(crate) fn replay_segment(
    path: &Path,
    is_last: bool,
    apply: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<Option<u64>, StoreError> {
    let context = || format!("reading wal segment {}", path.display());
    let scan = scan_records(path, apply)?;
    let (valid_len, file_len) = (scan.valid_len, scan.file_len);
    if valid_len < file_len && !is_last {
        // Only the newest segment can end in a torn write; damage anywhere
        // else would drop acknowledged records, so refuse to guess.
        return Err(StoreError::Data(format!(
            "wal segment {} is corrupt at byte {valid_len} of {file_len}; \
             it holds acknowledged events, so rakam will not start (`rakam wal check` lists every \
             problem; storage.embedded.wal_recovery = \"quarantine\" moves the damage aside and starts)",
            path.display()
        )));
    }
    if valid_len < file_len {
        // A torn write leaves nothing intact after it. An intact record
        // further on means the bytes in between were damaged, and they held
        // acknowledged events: refuse rather than cut them.
        if let Some(offset) = intact_record_after(path, valid_len, scan.last_sequence)? {
            return Err(StoreError::Data(format!(
                "wal segment {} is damaged at byte {valid_len} of {file_len}, and an intact record follows at byte {offset}: \
                 acknowledged events are in the damaged part, so rakam will not start; restore the segment from a backup \
                 (`rakam wal check` lists every problem; storage.embedded.wal_recovery = \"quarantine\" moves the damage aside and starts)",
                path.display()
            )));
        }
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = valid_len,
            dropped_bytes = file_len - valid_len,
            "wal segment has a torn or corrupt tail; cutting it off (it was never acknowledged)"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(StoreError::io(context()))?;
        file.set_len(valid_len).map_err(StoreError::io(context()))?;
        file.sync_all().map_err(StoreError::io(context()))?;
    }
    Ok(scan.last_sequence)
}

pub struct Scan {
    /// Where the intact records end (from the start of the file).
    pub valid_len: u64,
    pub file_len: u64,
    pub last_sequence: Option<u64>,
}

/// Reads the intact records of a segment, in order, stopping at the first
/// that is incomplete or fails its checksum. Changes nothing: safe on the
/// segment the writer is appending to.
pub fn scan_records(
    path: &Path,
    apply: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<Scan, StoreError> {
    scan_records_from(path, 0, apply)
}

/// Like [`scan_records`], starting at byte `start` (a record's start).
pub(crate) fn scan_records_from(
    path: &Path,
    start: u64,
    mut apply: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<Scan, StoreError> {
    let context = || format!("reading wal segment {}", path.display());
    let mut file = File::open(path).map_err(StoreError::io(context()))?;
    let file_len = file.metadata().map_err(StoreError::io(context()))?.len();
    file.seek(SeekFrom::Start(start))
        .map_err(StoreError::io(context()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut valid_len: u64 = start;
    let mut last_sequence = None;
    let mut header = [0_u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        if read_exact_or_eof(&mut reader, &mut header).map_err(StoreError::io(context()))? {
            break;
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut sequence_bytes = [0_u8; 8];
        sequence_bytes.copy_from_slice(&header[8..16]);
        let sequence = u64::from_le_bytes(sequence_bytes);
        if valid_len + HEADER_LEN as u64 + length > file_len {
            break;
        }
        payload.resize(length as usize, 0);
        if read_exact_or_eof(&mut reader, &mut payload).map_err(StoreError::io(context()))? {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&sequence_bytes);
        hasher.update(&payload);
        if hasher.finalize() != checksum {
            break;
        }
        apply(sequence, &payload)?;
        last_sequence = Some(sequence);
        valid_len += HEADER_LEN as u64 + length;
    }
    Ok(Scan {
        valid_len,
        file_len,
        last_sequence,
    })
}

/// Sequences ahead of the last good record an intact record may carry:
/// group commits of in-flight appends land in order, so a later record's
/// sequence is close.
const RESYNC_WINDOW: u64 = 1 << 20;

/// The offset of an intact record (length within the file, sequence just
/// after `last_sequence`, checksum right) after `from`, if there is one.
pub(crate) fn intact_record_after(
    path: &Path,
    from: u64,
    last_sequence: Option<u64>,
) -> Result<Option<u64>, StoreError> {
    let context = || format!("reading wal segment {}", path.display());
    let bytes = fs::read(path).map_err(StoreError::io(context()))?;
    let after = last_sequence.unwrap_or(0);
    let start = usize::try_from(from)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    for offset in start..bytes.len().saturating_sub(HEADER_LEN) {
        let header = &bytes[offset..offset + HEADER_LEN];
        let mut sequence_bytes = [0_u8; 8];
        sequence_bytes.copy_from_slice(&header[8..16]);
        let sequence = u64::from_le_bytes(sequence_bytes);
        if sequence <= after || sequence > after.saturating_add(RESYNC_WINDOW) {
            continue;
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(end) = (offset + HEADER_LEN).checked_add(length) else {
            continue;
        };
        if end > bytes.len() {
            continue;
        }
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&sequence_bytes);
        hasher.update(&bytes[offset + HEADER_LEN..end]);
        if hasher.finalize() == checksum {
            return Ok(Some(offset as u64));
        }
    }
    Ok(None)
}

/// Fills `buffer`; true if the file ended first.
fn read_exact_or_eof(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(true),
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}
