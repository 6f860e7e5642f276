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

/// A collection's directory name. Names that are plain identifiers (all
/// collections before names were opened up) are their own directory;
/// any other name is `~` and its bytes in hex, so no name can climb out of
/// its project's directory or clash with another.
pub(crate) fn collection_dir_name(collection: &str) -> String {
    let plain = !collection.is_empty()
        && collection
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        collection.to_string()
    } else {
        format!("~{}", hex::encode(collection.as_bytes()))
    }
}

/// The collection a directory holds; `None` for a name no collection has.
pub(crate) fn collection_of_dir(name: &str) -> Option<String> {
    match name.strip_prefix('~') {
        Some(encoded) => String::from_utf8(hex::decode(encoded).ok()?).ok(),
        None => Some(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_directories_round_trip_and_stay_inside() {
        for name in [
            "page_view",
            "order completed",
            "../../etc",
            "a/b",
            "ünï",
            "~x",
        ] {
            let dir = collection_dir_name(name);
            assert!(!dir.contains('/') && !dir.contains('.'), "{dir}");
            assert_eq!(collection_of_dir(&dir).as_deref(), Some(name));
        }
        assert_eq!(collection_dir_name("page_view"), "page_view");
    }
}
