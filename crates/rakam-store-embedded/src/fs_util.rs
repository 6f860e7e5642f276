//! Crash-safe file replacement: write a temporary file, fsync it, rename it
//! over the target, fsync the directory. A reader sees the old or the new
//! content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use rakam_store_api::StoreError;

pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> Result<(), StoreError> {
    let temporary = path.with_extension("tmp");
    let context = || format!("writing {}", path.display());
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(StoreError::io(context()))?;
        file.write_all(content).map_err(StoreError::io(context()))?;
        file.sync_all().map_err(StoreError::io(context()))?;
    }
    fs::rename(&temporary, path).map_err(StoreError::io(context()))?;
    sync_parent_dir(path)
}

pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(StoreError::io(format!(
            "syncing directory {}",
            dir.display()
        )))
}

pub(crate) fn create_dir_all_synced(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(format!("creating {}", dir.display())))?;
    sync_parent_dir(dir)
}
