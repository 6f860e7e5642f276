//! How the embedded catalog is kept on disk: a document (`catalog.json`)
//! and a log of the changes made since it was written (`catalog.log`, one
//! JSON record per line, fsynced before a change is visible). A new
//! collection or column appends one record the size of that collection's
//! schema, instead of rewriting every project's schemas: the cost of a
//! change does not grow with the number of collections. The document is
//! rewritten, and the log emptied, when the log outgrows it and at start-up.
//!
//! Records carry a sequence number, and the document the last one it
//! holds, so a crash between rewriting the document and emptying the log
//! replays nothing twice. A last line cut short is a change that was never
//! acknowledged (its fsync did not return) and is dropped; any other
//! unreadable line refuses start-up.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rakam_model::CollectionSchema;
use rakam_store_api::{KeyKind, ProjectId, ProjectInfo, ProjectSnapshot, Result, StoreError};
use serde::{Deserialize, Serialize};

use crate::fs_util::write_atomically;

const CATALOG_FORMAT_VERSION: u32 = 1;
/// The log is folded into the document once it is larger than the
/// document and at least this large.
const MIN_LOG_BYTES_BEFORE_REWRITE: u64 = 1 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogDocument {
    version: u32,
    /// The last log record the document holds.
    #[serde(default)]
    sequence: u64,
    pub(crate) projects: BTreeMap<String, Arc<ProjectEntry>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProjectEntry {
    pub(crate) id: ProjectId,
    pub(crate) created_at_ms: i64,
    /// Grows with every schema change; older catalogs start at 0.
    #[serde(default)]
    pub(crate) version: u64,
    /// SHA-256 of each key, and its kind.
    pub(crate) key_hashes: Vec<(String, KeyKind)>,
    pub(crate) collections: BTreeMap<String, Arc<CollectionSchema>>,
}

impl ProjectEntry {
    pub(crate) fn info(&self, name: &str) -> ProjectInfo {
        ProjectInfo {
            name: name.to_string(),
            id: self.id.clone(),
            created_at_ms: self.created_at_ms,
        }
    }

    pub(crate) fn snapshot(&self, name: &str) -> ProjectSnapshot {
        ProjectSnapshot {
            project: self.info(name),
            version: self.version,
            collections: self.collections.clone(),
        }
    }
}

/// One change to the catalog, by project name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    CreateProject {
        name: String,
        entry: Arc<ProjectEntry>,
    },
    DeleteProject {
        name: String,
    },
    AddKeys {
        name: String,
        key_hashes: Vec<(String, KeyKind)>,
    },
    SetCollection {
        name: String,
        collection: String,
        schema: Arc<CollectionSchema>,
        version: u64,
    },
}

impl Change {
    /// The project the change is about.
    pub(crate) fn project(&self) -> &str {
        match self {
            Self::CreateProject { name, .. }
            | Self::DeleteProject { name }
            | Self::AddKeys { name, .. }
            | Self::SetCollection { name, .. } => name,
        }
    }

    pub(crate) fn apply(&self, document: &mut CatalogDocument) {
        match self {
            Self::CreateProject { name, entry } => {
                document.projects.insert(name.clone(), entry.clone());
            }
            Self::DeleteProject { name } => {
                document.projects.remove(name);
            }
            Self::AddKeys { name, key_hashes } => {
                if let Some(entry) = document.projects.get_mut(name) {
                    Arc::make_mut(entry).key_hashes.extend(key_hashes.clone());
                }
            }
            Self::SetCollection {
                name,
                collection,
                schema,
                version,
            } => {
                if let Some(entry) = document.projects.get_mut(name) {
                    let entry = Arc::make_mut(entry);
                    entry.collections.insert(collection.clone(), schema.clone());
                    entry.version = *version;
                }
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LogRecord {
    sequence: u64,
    #[serde(flatten)]
    change: Change,
}

/// The files, and the document as of the last record written.
#[derive(Debug)]
pub(crate) struct CatalogFiles {
    document_path: PathBuf,
    log_path: PathBuf,
    log: File,
    log_bytes: u64,
    document_bytes: u64,
    sequence: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    StoreError::io(context)
}

impl CatalogFiles {
    /// Reads the document and replays the log onto it, then folds the log
    /// into a fresh document.
    pub(crate) fn open(document_path: PathBuf) -> Result<(Self, CatalogDocument)> {
        let log_path = document_path.with_extension("log");
        let mut document = read_document(&document_path)?;
        let mut sequence = document.sequence;
        for record in read_log(&log_path)? {
            if record.sequence > sequence {
                record.change.apply(&mut document);
                sequence = record.sequence;
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        let mut files = Self {
            document_path,
            log_path,
            log,
            log_bytes: 0,
            document_bytes: 0,
            sequence,
        };
        files.rewrite(&mut document)?;
        Ok((files, document))
    }

    /// Makes `change` durable; `document` is the catalog with it applied.
    pub(crate) fn append(&mut self, change: Change, document: &mut CatalogDocument) -> Result<()> {
        let record = LogRecord {
            sequence: self.sequence + 1,
            change,
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| StoreError::Data(format!("serialising a catalog change: {e}")))?;
        line.push(b'\n');
        let context = || format!("writing {}", self.log_path.display());
        self.log.write_all(&line).map_err(io(context()))?;
        self.log.sync_data().map_err(io(context()))?;
        self.sequence = record.sequence;
        self.log_bytes += line.len() as u64;
        if self.log_bytes > self.document_bytes.max(MIN_LOG_BYTES_BEFORE_REWRITE) {
            self.rewrite(document)?;
        }
        Ok(())
    }

    /// Writes the whole document, then empties the log.
    fn rewrite(&mut self, document: &mut CatalogDocument) -> Result<()> {
        document.version = CATALOG_FORMAT_VERSION;
        document.sequence = self.sequence;
        let bytes = serde_json::to_vec(&*document)
            .map_err(|e| StoreError::Data(format!("serialising catalog: {e}")))?;
        write_atomically(&self.document_path, &bytes)?;
        let context = || format!("emptying {}", self.log_path.display());
        self.log.set_len(0).map_err(io(context()))?;
        self.log.sync_all().map_err(io(context()))?;
        self.document_bytes = bytes.len() as u64;
        self.log_bytes = 0;
        Ok(())
    }
}

fn read_document(path: &Path) -> Result<CatalogDocument> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let document: CatalogDocument = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Data(format!("catalog {} is corrupt: {e}", path.display()))
            })?;
            if document.version != CATALOG_FORMAT_VERSION {
                return Err(StoreError::Data(format!(
                    "catalog format {} is not supported (expected {CATALOG_FORMAT_VERSION})",
                    document.version
                )));
            }
            Ok(document)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(CatalogDocument {
            version: CATALOG_FORMAT_VERSION,
            ..CatalogDocument::default()
        }),
        Err(error) => Err(StoreError::io(format!("reading {}", path.display()))(error)),
    }
}

fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(StoreError::io(format!("reading {}", path.display()))(error)),
    };
    let mut records = Vec::new();
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let is_last = lines.peek().is_none_or(|rest| rest.is_empty());
        match serde_json::from_slice::<LogRecord>(line) {
            Ok(record) => records.push(record),
            // Cut short by a crash before its fsync returned: never
            // acknowledged.
            Err(_) if is_last && !bytes.ends_with(b"\n") => break,
            Err(error) => {
                return Err(StoreError::Data(format!(
                    "catalog log {} is damaged after {} readable changes: {error}",
                    path.display(),
                    records.len()
                )))
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str) -> Arc<ProjectEntry> {
        Arc::new(ProjectEntry {
            id: ProjectId::new(id),
            created_at_ms: 1,
            version: 1,
            key_hashes: Vec::new(),
            collections: BTreeMap::new(),
        })
    }

    fn set(name: &str, collection: &str, version: u64) -> Change {
        Change::SetCollection {
            name: name.into(),
            collection: collection.into(),
            schema: Arc::new(CollectionSchema::default()),
            version,
        }
    }

    #[test]
    fn changes_survive_a_restart_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().expect("in a test");
        let path = dir.path().join("catalog.json");
        let (mut files, mut document) = CatalogFiles::open(path.clone()).expect("in a test");
        for change in [
            Change::CreateProject {
                name: "p".into(),
                entry: project("id1"),
            },
            set("p", "a", 2),
            set("p", "b", 3),
        ] {
            change.apply(&mut document);
            files.append(change, &mut document).expect("in a test");
        }
        drop(files);
        // A change whose write was cut short.
        let mut log = OpenOptions::new()
            .append(true)
            .open(path.with_extension("log"))
            .expect("in a test");
        log.write_all(br#"{"sequence":4,"change":"set_coll"#)
            .expect("in a test");
        drop(log);
        let (_, reopened) = CatalogFiles::open(path.clone()).expect("in a test");
        let entry = &reopened.projects["p"];
        assert_eq!(entry.collections.len(), 2);
        assert_eq!(entry.version, 3);
        assert_eq!(
            std::fs::metadata(path.with_extension("log"))
                .expect("in a test")
                .len(),
            0
        );
    }

    #[test]
    fn a_damaged_record_before_the_last_refuses_to_open() {
        let dir = tempfile::tempdir().expect("in a test");
        let path = dir.path().join("catalog.json");
        std::fs::write(
            path.with_extension("log"),
            "{\"sequence\":1,garbage\n{\"sequence\":2,\"change\":\"delete_project\",\"name\":\"p\"}\n",
        )
        .expect("in a test");
        let error = CatalogFiles::open(path).expect_err("in a test").to_string();
        assert!(error.contains("damaged"), "{error}");
    }

    #[test]
    fn records_the_document_already_holds_are_not_applied_twice() {
        let dir = tempfile::tempdir().expect("in a test");
        let path = dir.path().join("catalog.json");
        let (mut files, mut document) = CatalogFiles::open(path.clone()).expect("in a test");
        let create = Change::CreateProject {
            name: "p".into(),
            entry: project("id1"),
        };
        create.apply(&mut document);
        files.append(create, &mut document).expect("in a test");
        let keys = Change::AddKeys {
            name: "p".into(),
            key_hashes: vec![("h".into(), KeyKind::Write)],
        };
        keys.apply(&mut document);
        files.append(keys, &mut document).expect("in a test");
        // A crash after the document was rewritten but before the log was
        // emptied: the log still holds what the document holds.
        let log = std::fs::read(path.with_extension("log")).expect("in a test");
        files.rewrite(&mut document).expect("in a test");
        drop(files);
        std::fs::write(path.with_extension("log"), log).expect("in a test");
        let (_, reopened) = CatalogFiles::open(path).expect("in a test");
        assert_eq!(reopened.projects["p"].key_hashes.len(), 1);
    }
}
