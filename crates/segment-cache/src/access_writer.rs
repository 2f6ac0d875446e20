//! The access log's writer: one thread owns `access.log` and is fed through a bounded channel,
//! so a read never waits on the disk — neither an append nor a compaction (which reads, parses
//! and rewrites up to `cache.access_log_max`). Lines are written in the order they were queued.
//! A full queue drops the line (counted in `segment_cache_access_log_dropped_total`) instead of
//! holding up the read: the log is a hint for the next warm, a read is not. Closing the writer
//! (dropping it) writes everything queued before it returns.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::accesslog::{self, Record};

/// Lines queued at most; about 1.6 MiB of keys at 100 bytes a line.
pub const QUEUE: usize = 16 * 1024;

/// Keys a compaction keeps (the most recently read, each once).
const COMPACT_KEEP: usize = 100_000;

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// The writer of one access log.
#[derive(Debug)]
pub struct AccessWriter {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl AccessWriter {
    /// Opens (creating) the log at `path` for appending, compacted past `max` bytes through a
    /// temp file in `tmp_dir`, and starts its thread.
    pub fn open(path: &Path, max: u64, tmp_dir: &Path) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let log = LogFile {
            path: path.to_path_buf(),
            compact_tmp: tmp_dir.join("access.log.compact"),
            file,
            len,
            max,
            pending: String::new(),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(&rx, log))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `r`; never blocks (a full queue drops it, counted).
    pub fn record(&self, r: &Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(accesslog::format_line(r))) {
            metrics::counter!(crate::metric_names::ACCESS_LOG_DROPPED).increment(1);
        }
    }

    /// Waits until everything queued so far is written. Blocks: not for a runtime thread.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = sync_channel(1);
        if tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for AccessWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written what was queued.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: &Receiver<Msg>, mut log: LogFile) {
    while let Ok(first) = rx.recv() {
        // One write for whatever else is queued already.
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => log.pending.push_str(&l),
                Msg::Flush(a) => acks.push(a),
            }
            next = rx.try_recv().ok();
        }
        log.write_out();
        for a in acks {
            let _ = a.send(());
        }
    }
    log.write_out();
}

struct LogFile {
    path: PathBuf,
    compact_tmp: PathBuf,
    file: fs::File,
    len: u64,
    max: u64,
    pending: String,
}

impl LogFile {
    fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending);
        match self.file.write_all(text.as_bytes()) {
            Ok(()) => self.len += text.len() as u64,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "access log append failed")
            }
        }
        if self.len > self.max
            && let Err(e) = self.compact()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "access log compaction failed");
        }
    }

    /// Rewrites the log as its distinct keys, most recent last, atomically (temp + rename).
    fn compact(&mut self) -> io::Result<()> {
        let text = fs::read_to_string(&self.path)?;
        let mut recent = accesslog::recent_keys(&text);
        recent.truncate(COMPACT_KEEP);
        recent.reverse();
        let out: String = recent.iter().map(accesslog::format_line).collect();
        fs::write(&self.compact_tmp, &out)?;
        fs::rename(&self.compact_tmp, &self.path)?;
        self.file = fs::OpenOptions::new().append(true).open(&self.path)?;
        self.len = out.len() as u64;
        Ok(())
    }
}
