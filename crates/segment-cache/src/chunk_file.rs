//! Writes a download's body chunks to a cache file on the blocking pool, about 1 MiB per hop,
//! without copying them. `tokio::fs::File` would copy every chunk into its own buffer (and a
//! `BufWriter` in front of it once more) before each blocking write; here the chunks (`Bytes`,
//! reference-counted) move to the blocking thread as they are and are written from there.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

/// Bytes gathered before one blocking write.
const BATCH: usize = 1 << 20;

/// A file being filled from a stream of chunks.
#[derive(Debug)]
pub struct ChunkFile {
    file: Option<File>,
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl ChunkFile {
    /// Creates (truncates) the file at `path`.
    pub async fn create(path: &Path) -> io::Result<Self> {
        let path = path.to_path_buf();
        let file = blocking(move || File::create(path)).await?;
        Ok(Self::from_file(file))
    }

    /// Opens the existing file at `path` for writing from byte `offset` (one range of it).
    pub async fn at_offset(path: &Path, offset: u64) -> io::Result<Self> {
        let path = path.to_path_buf();
        let file = blocking(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        })
        .await?;
        Ok(Self::from_file(file))
    }

    fn from_file(file: File) -> Self {
        Self {
            file: Some(file),
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Appends `chunk`; writes the gathered chunks once they reach about 1 MiB.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= BATCH {
            self.write_pending(false).await?;
        }
        Ok(())
    }

    /// Writes what is left and, with `sync`, makes the data durable (`fdatasync`).
    pub async fn finish(mut self, sync: bool) -> io::Result<()> {
        self.write_pending(sync).await
    }

    async fn write_pending(&mut self, sync: bool) -> io::Result<()> {
        // Nothing to write or sync: no blocking-pool hop (an earlier failure still reports below).
        if self.pending.is_empty() && !sync && self.file.is_some() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write to this file failed"))?;
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let file = blocking(move || {
            for c in &chunks {
                file.write_all(c)?;
            }
            if sync {
                file.sync_data()?;
            }
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_land_in_order_whole_and_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 253) as u8).collect();
        let mut w = ChunkFile::create(&path).await.unwrap();
        for c in data.chunks(16_384) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        w.finish(true).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);

        // Two ranges written out of order into a pre-sized file.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(data.len() as u64)
            .unwrap();
        for (a, b) in [(1_500_000, data.len()), (0, 1_500_000)] {
            let mut w = ChunkFile::at_offset(&path, a as u64).await.unwrap();
            for c in data[a..b].chunks(65_536) {
                w.write(Bytes::copy_from_slice(c)).await.unwrap();
            }
            w.finish(false).await.unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
