//! WAL replay of a damaged segment: the input is framed as records (so
//! payload decoding is reached past the checksums) with raw bytes between
//! them; checking, quarantining and decoding never panic, and after
//! quarantine the segment has no damage left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rakam_store_embedded::fuzzing::{decode_payload, encode_record, quarantine_damage, scan_records};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    // Chunks separated by 0xFF: even chunks become records, odd ones raw
    // (damaged) bytes.
    let mut segment = Vec::new();
    for (index, chunk) in data.split(|&b| b == 0xFF).enumerate() {
        if index % 2 == 0 {
            encode_record(index as u64 + 1, chunk, &mut segment);
        } else {
            segment.extend_from_slice(chunk);
        }
    }
    let path = dir.path().join("00000000000000000001.wal");
    if std::fs::write(&path, &segment).is_err() {
        return;
    }
    let _ = scan_records(&path, |_, payload| {
        let _ = decode_payload(payload);
        Ok(())
    });
    if let Ok(report) = rakam_store_embedded::check_wal(dir.path()) {
        if !report.is_healthy() && quarantine_damage(dir.path()).is_ok() {
            let after = rakam_store_embedded::check_wal(dir.path()).expect("check after quarantine");
            assert!(after.is_healthy(), "damage left after quarantine: {:?}", after.problems);
        }
    }
});
