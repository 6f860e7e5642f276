//! The WAL payload of one append: the project id, then each collection's
//! rows as an Arrow IPC stream, so replay rebuilds exactly the batches that
//! were acknowledged.

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::record_batch::RecordBatch;
use rakam_store_api::{ProjectId, StoreError};

pub struct AppendPayload {
    pub project_id: ProjectId,
    pub batches: Vec<(String, RecordBatch)>,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn encode(
    project_id: &ProjectId,
    batches: &[(String, RecordBatch)],
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    put_bytes(&mut out, project_id.as_str().as_bytes());
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for (collection, batch) in batches {
        put_bytes(&mut out, collection.as_bytes());
        // The stream is written in place after its length, which is filled
        // in once known: the record is not copied a second time.
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        {
            // LZ4 keeps sparse batches (a wide collection, few fields per
            // event: mostly nulls) from multiplying the bytes written; the
            // reader finds the codec in the stream, so older records read.
            let options = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::LZ4_FRAME))?;
            let mut writer =
                StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let length = u32::try_from(out.len() - length_at - 4).map_err(|_| {
            StoreError::Data("a collection's rows exceed a WAL record's 4 GiB".into())
        })?;
        out[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| StoreError::Data("wal payload is truncated".into()))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn chunk(&mut self) -> Result<&'a [u8], StoreError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.chunk()?.to_vec())
            .map_err(|_| StoreError::Data("wal payload has a non-UTF-8 name".into()))
    }
}

pub fn decode(bytes: &[u8]) -> Result<AppendPayload, StoreError> {
    let mut reader = Reader { bytes, position: 0 };
    let project_id = ProjectId::new(reader.string()?);
    let count = reader.u32()?;
    let mut batches = Vec::new();
    for _ in 0..count {
        let collection = reader.string()?;
        let ipc = reader.chunk()?;
        for batch in StreamReader::try_new(Cursor::new(ipc), None)? {
            batches.push((collection.clone(), batch?));
        }
    }
    Ok(AppendPayload {
        project_id,
        batches,
    })
}
