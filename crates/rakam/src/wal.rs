//! `rakam wal check`: what the embedded store's WAL holds, offline.

use anyhow::Context;
use rakam_config::{Config, StorageConfig};

/// Prints the report; whether the WAL is free of damage and gaps.
pub fn check(config: &Config) -> anyhow::Result<bool> {
    let StorageConfig::Embedded(embedded) = &config.storage else {
        anyhow::bail!(
            "rakam wal check reads the embedded store's WAL (storage.backend = \"embedded\")"
        );
    };
    let wal_dir = embedded.data_dir.join("wal");
    let report = rakam_store_embedded::check_wal(&wal_dir)
        .with_context(|| format!("checking {}", wal_dir.display()))?;
    println!(
        "{}: {} segments, {} bytes, {} intact records, last sequence {}",
        wal_dir.display(),
        report.segments,
        report.bytes,
        report.records,
        report
            .last_sequence
            .map_or_else(|| "none".to_string(), |s| s.to_string())
    );
    if report.torn_tail_bytes > 0 {
        println!(
            "torn tail: the last {} bytes are a record that was never acknowledged (cut at start-up)",
            report.torn_tail_bytes
        );
    }
    if report.is_healthy() {
        println!("ok: no damage, no missing segment");
        return Ok(true);
    }
    for problem in &report.problems {
        println!("DAMAGED: {problem}");
    }
    println!(
        "the server refuses to start on this WAL; restore the damaged or missing segments, \
         or start with --wal-recovery quarantine to move the damage to {} and keep every intact record",
        wal_dir.join("quarantine").display()
    );
    Ok(false)
}
