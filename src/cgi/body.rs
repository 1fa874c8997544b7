//! Response bodies: a fixed text, or a command's output as it is produced.
//! A command that failed ends its body with an error, which makes hyper cut
//! the connection without the terminating chunk; that error is held back
//! until the output before it has reached the socket (for at most the
//! stall timeout: a client that reads nothing does not keep its connection).
//! Only an explicit `End` or trailers end a body cleanly.

use super::conn_io::ConnShared;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::HeaderMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// What the command runner sends to the body. The channel closing without
/// `End` or `Trailers` (the runner gave up on the client) cuts the
/// connection at once.
#[derive(Debug)]
pub(crate) enum Output {
    Data(Bytes),
    /// The command exited 0.
    End,
    /// The exit code, for a client that asked for trailers.
    Trailers(HeaderMap),
    Failed(CommandFailed),
}

/// The command exited non-zero (or died): the body must not end cleanly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandFailed {
    pub(crate) exit_code: i32,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command exited with status {}", self.exit_code)
    }
}

impl std::error::Error for CommandFailed {}

pub(crate) enum Body {
    Full(Option<Bytes>),
    Stream(StreamBody),
}

pub(crate) struct StreamBody {
    rx: mpsc::Receiver<Output>,
    conn: Arc<ConnShared>,
    failed: Option<CommandFailed>,
    /// How long a failure waits for the output before it to be flushed.
    stall_timeout: Duration,
    flush_deadline: Option<Pin<Box<Sleep>>>,
    started: bool,
    done: bool,
}

impl Body {
    pub(crate) fn text(s: impl Into<Bytes>) -> Self {
        Body::Full(Some(s.into()))
    }

    pub(crate) fn stream(
        rx: mpsc::Receiver<Output>,
        conn: Arc<ConnShared>,
        stall_timeout: Duration,
    ) -> Self {
        Body::Stream(StreamBody {
            rx,
            conn,
            failed: None,
            stall_timeout,
            flush_deadline: None,
            started: false,
            done: false,
        })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = CommandFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CommandFailed>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CommandFailed>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.started {
            // hyper buffers the response head just before the first poll.
            self.started = true;
            self.conn.data_queued();
        }
        if let Some(f) = self.failed {
            // Cutting the connection drops whatever hyper still buffers:
            // wait until it is on the socket, or the client proved it reads
            // nothing.
            let deadline = self
                .flush_deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.stall_timeout)));
            if self.conn.poll_flushed(cx).is_pending() && deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.done = true;
            return Poll::Ready(Some(Err(f)));
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Output::Data(b)) => {
                self.conn.data_queued();
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Some(Output::Trailers(t)) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Some(Output::End) => {
                self.done = true;
                Poll::Ready(None)
            }
            Some(Output::Failed(f)) => {
                self.failed = Some(f);
                self.poll_frame(cx)
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Err(CommandFailed { exit_code: -1 })))
            }
        }
    }
}
