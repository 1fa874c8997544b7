//! The monitor's one writer to the container log (its stderr): lines go
//! into a bounded queue that a dedicated thread writes out. A log reader
//! that is slow or stuck never blocks a session or the relay: when the
//! queue is full the line is dropped and counted, and a `log.dropped`
//! line says how many once the writer catches up.
//!
//! When stderr is a pipe (`docker logs`), a line is first tried directly
//! on a non-blocking descriptor of that pipe of its own (a second open of
//! it: the pipe's other writers keep their blocking one), which costs no
//! hand-off to the writer thread; only when the pipe is full, or lines
//! are already queued or dropped, does it go through the queue, so the
//! order and the drop count stay as they were.

use crate::audit::{Format, Record};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Lines handed to the writer thread and not yet written.
    queued: Arc<AtomicUsize>,
    /// The drop count the writer has reported in a `log.dropped` line.
    reported: Arc<AtomicU64>,
    direct: Option<Arc<std::fs::File>>,
}

impl Output {
    /// Starts the writer thread on this process's stderr.
    pub(crate) fn stderr(format: Format) -> Output {
        let mut out = Self::start(Box::new(std::io::stderr()), format);
        out.direct = nonblocking_pipe("/proc/self/fd/2").map(Arc::new);
        out
    }

    /// `format` is the `log.dropped` line's.
    pub(crate) fn start(mut sink: Box<dyn std::io::Write + Send>, format: Format) -> Output {
        let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let reported_to = Arc::new(AtomicU64::new(0));
        let (left, told) = (queued.clone(), reported_to.clone());
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
                    told.store(now, Ordering::Release);
                }
                // One write per line: lines never interleave with another
                // writer's on the same pipe (writes up to 4 KiB are atomic).
                let _ = sink.write_all(line.as_bytes());
                left.fetch_sub(1, Ordering::AcqRel);
            }
        });
        Output {
            tx,
            dropped,
            done: Arc::new(std::sync::Mutex::new(Some(done_rx))),
            queued,
            reported: reported_to,
            direct: None,
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
        if let Some(pipe) = &self.direct {
            // Nothing waiting and every drop told: this line may go first.
            // A write of at most 4 KiB to a pipe is all or nothing.
            if self.queued.load(Ordering::Acquire) == 0
                && self.dropped.load(Ordering::Relaxed) == self.reported.load(Ordering::Acquire)
                && (&**pipe)
                    .write(line.as_bytes())
                    .is_ok_and(|n| n == line.len())
            {
                return;
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far because the log reader did not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A write-only, non-blocking descriptor of the pipe at `path` (a
/// `/proc/self/fd/N` link) that is this process's own: opening the link
/// makes a new open file description, so O_NONBLOCK on it changes nothing
/// for the pipe's other writers. None when it is not a pipe (a file, a
/// terminal: written by the thread only) or it cannot be opened.
fn nonblocking_pipe(path: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    if !std::fs::metadata(path).ok()?.file_type().is_fifo() {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()
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

    /// Lines on a pipe: written directly while it has room, queued when it
    /// is full, dropped and counted beyond the queue, and in order.
    #[test]
    fn a_full_pipe_queues_then_drops_and_keeps_the_order() {
        use std::io::Read as _;
        use std::os::fd::AsRawFd as _;
        let (mut reader, writer) = std::io::pipe().unwrap();
        let fd = writer.as_raw_fd();
        let mut out = Output::start(Box::new(writer), Format::Text);
        out.direct = nonblocking_pipe(&format!("/proc/self/fd/{fd}")).map(Arc::new);
        assert!(out.direct.is_some());
        out.line("event=first".into());
        assert_eq!(out.queued.load(Ordering::Acquire), 0, "written directly");
        let t = std::time::Instant::now();
        let lines = 64 * 1024 / 16 + QUEUE_LINES * 2;
        for i in 0..lines {
            out.line(format!("event=x n={i:06}"));
        }
        // Returned at once although nobody reads the pipe.
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(out.dropped() > 0);
        let got = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 65536];
            while !String::from_utf8_lossy(&all).contains("event=last") {
                let n = reader.read(&mut buf).unwrap();
                assert!(n > 0);
                all.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(all).unwrap()
        });
        // Once the queue has drained and the drops are told, lines go out
        // again (directly).
        let ok = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            out.queued.load(Ordering::Acquire) == 0
        });
        assert!(ok);
        out.line("event=last".into());
        let text = got.join().unwrap();
        assert!(text.starts_with("event=first\n"), "{}", &text[..40]);
        assert!(text.contains("event=log.dropped count="), "no drop note");
        let ns: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event=x n="))
            .collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert_eq!(ns.len() as u64 + out.dropped(), lines as u64);
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
