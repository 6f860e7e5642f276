//! The table format: Parquet files plus one JSON manifest per collection
//! that lists the live files and the last WAL sequence they contain (ADR
//! 0001). The manifest is replaced atomically, so a flush or a compaction
//! is all-or-nothing, and replay skips exactly what is already in a file.

use std::path::{Path, PathBuf};

use rakam_store_api::StoreError;
use serde::{Deserialize, Serialize};

use crate::fs_util::write_atomically;

pub(crate) const MANIFEST_FILE: &str = "manifest.json";
const MANIFEST_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DataFile {
    /// File name inside the collection directory.
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
    pub unmapped_rows: u64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format_version: u32,
    /// Increases with every commit.
    pub version: u64,
    /// Every WAL record of this collection up to this sequence is in `files`.
    pub flushed_sequence: u64,
    pub files: Vec<DataFile>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            version: 0,
            flushed_sequence: 0,
            files: Vec::new(),
        }
    }
}

impl Manifest {
    pub(crate) fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Data(format!("manifest {} is corrupt: {e}", path.display()))
                })?;
                if manifest.format_version != MANIFEST_FORMAT_VERSION {
                    return Err(StoreError::Data(format!(
                        "manifest {} has unsupported format {}",
                        path.display(),
                        manifest.format_version
                    )));
                }
                Ok(manifest)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(StoreError::io(format!("reading {}", path.display()))(error)),
        }
    }

    pub(crate) fn commit(&self, dir: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::Data(format!("serialising manifest: {e}")))?;
        write_atomically(&dir.join(MANIFEST_FILE), &bytes)
    }

    pub(crate) fn file_paths(&self, dir: &Path) -> Vec<(PathBuf, u64)> {
        self.files
            .iter()
            .map(|file| (dir.join(&file.name), file.bytes))
            .collect()
    }

    pub(crate) fn rows(&self) -> u64 {
        self.files.iter().map(|file| file.rows).sum()
    }

    pub(crate) fn unmapped_rows(&self) -> u64 {
        self.files.iter().map(|file| file.unmapped_rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Manifest::load(dir.path()).expect("empty"),
            Manifest::default()
        );
        let manifest = Manifest {
            version: 3,
            flushed_sequence: 42,
            files: vec![DataFile {
                name: "part-1.parquet".into(),
                bytes: 10,
                rows: 2,
                unmapped_rows: 1,
                min_time_ms: 5,
                max_time_ms: 9,
            }],
            ..Manifest::default()
        };
        manifest.commit(dir.path()).expect("commit");
        assert_eq!(Manifest::load(dir.path()).expect("load"), manifest);
    }
}
