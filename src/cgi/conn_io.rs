//! The TCP stream under hyper, with jobs hyper cannot do for us: it
//! counts `Content-Length` lines in each request head (hyper silently
//! merges identical duplicates, and we refuse them), it notes line ends
//! other than CRLF and other shapes hyper tolerates (bare LF, which a proxy
//! in front may read differently: a smuggling vector), and it tells a response
//! body when everything hyper buffered has reached the socket, so a failed
//! command's last output is on the wire before the connection is cut.
//! It never changes a byte.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Facts about one request head, seen on the raw bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadFacts {
    pub(crate) content_length_lines: u32,
    /// The first framing fault in the head (or in blank lines before it),
    /// for the refusal: the request is answered 400 and the connection
    /// closed, whatever it asked.
    pub(crate) fault: Option<HeadFault>,
}

/// A head that hyper would serve but that another HTTP parser (a proxy in
/// front) may split differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadFault {
    /// LF without the CR before it.
    BareLf,
    /// CR not followed by LF.
    BareCr,
    /// A header line starting with white space (obs-fold, RFC 9112 5.2).
    ObsFold,
    /// A control character (other than tab) or DEL in the head.
    Control,
}

impl HeadFault {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            HeadFault::BareLf => "a line of the request head ends in LF without CR",
            HeadFault::BareCr => "a CR in the request head is not followed by LF",
            HeadFault::ObsFold => "a header line starts with white space (line folding)",
            HeadFault::Control => "a control character in the request head",
        }
    }
}

/// Shared between the stream (which hyper owns) and the service/bodies of
/// the same connection.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    state: Mutex<SharedState>,
}

#[derive(Debug)]
struct SharedState {
    heads: VecDeque<HeadFacts>,
    /// Heads seen complete on this connection.
    heads_seen: u64,
    /// Bytes of a head that is not complete yet were received.
    partial_head: bool,
    /// Every byte hyper was given has been written to the socket.
    flushed: bool,
    flush_waker: Option<Waker>,
}

impl Default for SharedState {
    fn default() -> Self {
        Self {
            heads: VecDeque::new(),
            heads_seen: 0,
            partial_head: false,
            flushed: true,
            flush_waker: None,
        }
    }
}

impl ConnShared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // A panic while holding this lock cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The facts of the next request head, in arrival order (hyper serves
    /// the requests of a connection in order).
    pub(crate) fn next_head(&self) -> HeadFacts {
        self.lock().heads.pop_front().unwrap_or_default()
    }

    /// Whether a header timeout cut a client that was sending a head (or
    /// never sent one), rather than an idle keep-alive connection.
    pub(crate) fn cut_mid_head(&self) -> bool {
        let s = self.lock();
        s.partial_head || s.heads_seen == 0
    }

    /// A body handed hyper a data frame: not flushed until hyper says so.
    pub(crate) fn data_queued(&self) {
        self.lock().flushed = false;
    }

    /// Ready once hyper has written all it buffered to the socket.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.flushed {
            Poll::Ready(())
        } else {
            s.flush_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

pub(crate) struct ConnIo {
    inner: TcpStream,
    scanner: HeadScanner,
    shared: Arc<ConnShared>,
}

impl ConnIo {
    pub(crate) fn new(inner: TcpStream, shared: Arc<ConnShared>) -> Self {
        Self {
            inner,
            scanner: HeadScanner::default(),
            shared,
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let mut done = Vec::new();
            me.scanner.feed(&buf.filled()[before..], &mut done);
            let mut s = me.shared.lock();
            s.heads_seen += done.len() as u64;
            s.heads.extend(done);
            s.partial_head = me.scanner.partial();
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper calls this only once its own write buffer is empty.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            let waker = {
                let mut s = self.shared.lock();
                s.flushed = true;
                s.flush_waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const CONTENT_LENGTH: &[u8] = b"content-length";

/// Splits the byte stream of a connection into request heads (every
/// request we serve has no body, so the stream is heads only; a request
/// with a body is answered and the connection closed) and counts the
/// `Content-Length:` lines of each, the way httparse reads them: name at the
/// start of a line, any case, colon right after it. It also notes the
/// first [`HeadFault`]; its idea of where a head ends (an empty line, CR
/// optional) is httparse's, so it stays in step with hyper even on a
/// faulty head.
#[derive(Debug, Default)]
struct HeadScanner {
    /// The previous byte was a CR.
    after_cr: bool,
    fault: Option<HeadFault>,
    /// The request line of the current head is complete.
    in_headers: bool,
    /// Bytes of the current line, CR excluded.
    line_len: usize,
    /// How much of `content-length:` the current header line matched;
    /// `None` once it cannot match.
    matched: Option<usize>,
    content_length_lines: u32,
}

impl HeadScanner {
    /// Some bytes of a head that is not complete yet were seen.
    fn partial(&self) -> bool {
        self.in_headers || self.line_len > 0
    }

    fn note(&mut self, fault: HeadFault) {
        self.fault.get_or_insert(fault);
    }

    fn feed(&mut self, bytes: &[u8], done: &mut Vec<HeadFacts>) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            if after_cr && b != b'\n' {
                self.note(HeadFault::BareCr);
            }
            match b {
                b'\n' => {
                    if !after_cr {
                        self.note(HeadFault::BareLf);
                    }
                    if self.line_len == 0 {
                        if self.in_headers {
                            done.push(HeadFacts {
                                content_length_lines: self.content_length_lines,
                                fault: self.fault,
                            });
                            *self = Self::default();
                        }
                        // else: blank lines before a request line, skipped.
                    } else {
                        self.in_headers = true;
                    }
                    self.line_len = 0;
                    self.matched = Some(0);
                }
                b'\r' => {}
                _ => {
                    if self.in_headers && self.line_len == 0 && matches!(b, b' ' | b'\t') {
                        self.note(HeadFault::ObsFold);
                    }
                    if (b < 0x20 && b != b'\t') || b == 0x7f {
                        self.note(HeadFault::Control);
                    }
                    if self.in_headers {
                        self.matched = match self.matched {
                            Some(i)
                                if i < CONTENT_LENGTH.len()
                                    && b.to_ascii_lowercase() == CONTENT_LENGTH[i] =>
                            {
                                Some(i + 1)
                            }
                            Some(i) if i == CONTENT_LENGTH.len() && b == b':' => {
                                self.content_length_lines += 1;
                                None
                            }
                            _ => None,
                        };
                    }
                    self.line_len += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_chunks(chunks: &[&[u8]]) -> Vec<HeadFacts> {
        let mut s = HeadScanner::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        out
    }

    fn counts(chunks: &[&[u8]]) -> Vec<u32> {
        scan_chunks(chunks)
            .into_iter()
            .map(|h| h.content_length_lines)
            .collect()
    }

    #[test]
    fn counts_content_length_lines_per_head() {
        let two = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\ncontent-LENGTH: 0\r\n\r\n";
        let one = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let none = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(counts(&[two]), vec![2]);
        assert_eq!(counts(&[one, none, two]), vec![1, 0, 2]);
    }

    #[test]
    fn split_anywhere_gives_the_same_answer() {
        let req: &[u8] = b"\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nX: a\r\nContent-Length:0\r\n\r\nGET / HTTP/1.1\nContent-length: 1\n\n";
        for cut in 0..req.len() {
            assert_eq!(
                counts(&[&req[..cut], &req[cut..]]),
                vec![2, 1],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn only_the_header_name_counts() {
        let req = b"GET /Content-Length: HTTP/1.1\r\nX-Content-Length: 1\r\nContent-Lengthy: 2\r\nContent-Length : 3\r\nX: Content-Length: 4\r\n\r\n";
        assert_eq!(counts(&[req]), vec![0]);
    }

    fn faults(chunks: &[&[u8]]) -> Vec<Option<HeadFault>> {
        scan_chunks(chunks).into_iter().map(|h| h.fault).collect()
    }

    #[test]
    fn line_end_faults_are_noted_per_head() {
        let good: &[u8] = b"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n";
        assert_eq!(faults(&[good]), vec![None]);
        for (head, fault) in [
            (
                &b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n"[..],
                HeadFault::BareLf,
            ),
            (b"GET / HTTP/1.1\nX: a\r\n\r\n", HeadFault::BareLf),
            (b"GET / HTTP/1.1\r\nX: a\r\n\n", HeadFault::BareLf),
            (b"\nGET / HTTP/1.1\r\n\r\n", HeadFault::BareLf),
            (b"GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n", HeadFault::BareCr),
            (b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n", HeadFault::BareCr),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", HeadFault::ObsFold),
            (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", HeadFault::ObsFold),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", HeadFault::Control),
            (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", HeadFault::Control),
        ] {
            // The fault belongs to its head only, wherever the reads split.
            for cut in 0..head.len() {
                assert_eq!(
                    faults(&[&head[..cut], &head[cut..], good]),
                    vec![Some(fault), None],
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn incomplete_head_is_not_reported() {
        assert!(counts(&[b"GET / HTTP/1.1\r\nContent-Length: 0\r\n"]).is_empty());
    }
}
