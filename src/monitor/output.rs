//! The monitor's one writer to the container log (its stderr): lines go
//! into a bounded queue that a dedicated thread writes out. A log reader
//! that is slow or stuck never blocks a session or the relay: when the
//! queue is full the line is dropped and counted, and a `log.dropped`
//! line says how many once the writer catches up.

use crate::audit::{Format, Record};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Lines waiting for the writer at most (each at most `MAX_LINE` bytes):
/// bounds the memory a stuck reader can cost.
const QUEUE_LINES: usize = 512;
/// Longest line written, newline included (SPEC 11: an event line never
/// exceeds 4 KiB).
pub(crate) const MAX_LINE: usize = 4096;

/// A cheap, cloneable handle to the log writer.
#[derive(Clone)]
pub(crate) struct Output {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    done: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
}

impl Output {
    /// Starts the writer thread on this process's stderr.
    pub(crate) fn stderr(format: Format) -> Output {
        Self::start(Box::new(std::io::stderr()), format)
    }

    /// `format` is the `log.dropped` line's.
    pub(crate) fn start(mut sink: Box<dyn std::io::Write + Send>, format: Format) -> Output {
        let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _done = done_tx;
            let mut reported = 0;
            while let Ok(line) = rx.recv() {
                let now = seen.load(Ordering::Relaxed);
                if now != reported {
                    let dropped = Record::new("log.dropped")
                        .int("count", (now - reported) as i64)
                        .int("total", now as i64);
                    let mut note = crate::audit::render_now(&dropped, format);
                    note.push('\n');
                    let _ = sink.write_all(note.as_bytes());
                    reported = now;
                }
                // One write per line: lines never interleave with another
                // writer's on the same pipe (writes up to 4 KiB are atomic).
                let _ = sink.write_all(line.as_bytes());
            }
        });
        Output {
            tx,
            dropped,
            done: Arc::new(std::sync::Mutex::new(Some(done_rx))),
        }
    }

    /// Waits up to `timeout` for the queued lines to be written. The
    /// writer ends when every handle is gone; this waits for that from the
    /// last one.
    pub(crate) fn close(self, timeout: std::time::Duration) {
        let done = self.done.lock().unwrap().take();
        drop(self);
        if let Some(done) = done {
            let _ = done.recv_timeout(timeout);
        }
    }

    /// Queues one line (a newline is added; over-long lines are cut at a
    /// character boundary). Never blocks.
    pub(crate) fn line(&self, mut line: String) {
        if line.len() > MAX_LINE - 1 {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far because the log reader did not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A sink that blocks until released: a stuck `docker logs` reader.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.0;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_drops_and_counts_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let out = Output::start(Box::new(Stuck(gate.clone(), got.clone())), Format::Text);
        for i in 0..(QUEUE_LINES * 3) {
            out.line(format!("event=x n={i}"));
        }
        // Returned although nothing could be written: a line that waited
        // for the stuck reader would hang here until the gate opens below.
        assert!(out.dropped() >= (QUEUE_LINES as u64), "{}", out.dropped());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        // The queue drains; then new lines get through again.
        let ok = (0..500).any(|_| {
            out.line("event=last".into());
            std::thread::sleep(std::time::Duration::from_millis(10));
            String::from_utf8_lossy(&got.lock().unwrap()).contains("event=last")
        });
        assert!(ok);
        let text = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
        assert!(text.contains("event=log.dropped count="), "{text}");
    }

    #[test]
    fn long_lines_are_cut_to_4_kib() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let out = Output::start(Box::new(Stuck(gate, got.clone())), Format::Text);
        out.line("é".repeat(5000));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let g = got.lock().unwrap();
        assert!(g.len() <= MAX_LINE && g.ends_with(b"\n"), "{}", g.len());
        assert!(std::str::from_utf8(&g).is_ok());
    }
}
