//! A tunnel as a byte stream: [`TunnelIo`] implements tokio's
//! `AsyncRead`/`AsyncWrite` and the futures-io ones, so a tunnel can be
//! handed to anything that speaks bytes (`tokio::io::copy`, a codec, a TLS
//! session inside the tunnel).
//!
//! A [`Tunnel`](crate::Tunnel) is a stream of *messages*: each `send`
//! arrives as one `recv`, boundaries kept. Byte-stream code wants no
//! boundaries, so the byte view is a separate type, reached with
//! [`Tunnel::into_io`](crate::Tunnel::into_io), rather than more traits on
//! the message type: reading half a message would otherwise leave the rest
//! where the next message-`recv` could not see it.
//!
//! Both trait families are implemented on every runtime (the type does not
//! depend on one, and both crates hold only traits here): a tokio user
//! imports `tokio::io::{AsyncReadExt, AsyncWriteExt}`, an async-std or smol
//! user `futures::io` (or `futures_lite::io`) extension traits.
//!
//! - **Writes** send at most what the credit window allows at once, as one
//!   message, and wait (`Pending`) for credit otherwise: a write is never
//!   half sent, so abandoning one loses nothing and needs no abort. Flow
//!   control is the tunnel's: a reader that stops stops the writer.
//! - **Reads** take the next message and hand it out across as many reads
//!   as the caller's buffers need; a read dropped while pending takes
//!   nothing.
//! - **Flush** has nothing to do (a write hands its bytes to the node's
//!   connection); **shutdown** (`poll_shutdown`, futures' `poll_close`)
//!   closes the tunnel, which the other end reads as the end of the stream
//!   after every byte sent before it. The tunnel protocol has no half
//!   close: after a shutdown this end reads the end of the stream too.
//! - The end of the stream is a clean close by the other end; any other
//!   failure is an `io::Error` whose inner error is the [`TunnelError`]
//!   (`TimedOut` for a timeout, `ConnectionReset` for an unreachable node,
//!   `ConnectionAborted` for a remote error or a protocol violation).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use reign_proto::TunnelError;

/// A tunnel as a byte stream (see the module docs). Dropping it closes the
/// tunnel.
pub struct TunnelIo {
    tunnel: reign_proto::Tunnel,
    /// The rest of the message the last read took part of.
    pending: Bytes,
    /// A clean close was read: every later read is the end of the stream.
    eof: bool,
}

impl TunnelIo {
    /// A byte stream over `tunnel`.
    pub fn new(tunnel: reign_proto::Tunnel) -> TunnelIo {
        TunnelIo {
            tunnel,
            pending: Bytes::new(),
            eof: false,
        }
    }

    /// The tunnel underneath.
    pub fn tunnel(&self) -> &reign_proto::Tunnel {
        &self.tunnel
    }

    /// Bytes of a message already taken from the tunnel and not yet read.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Copies what is ready into `out`; `Ready(Ok(0))` only at the end of
    /// the stream or for an empty `out`.
    fn poll_read_into(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        while self.pending.is_empty() {
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            match ready!(self.tunnel.poll_recv(cx)) {
                // An empty message is a valid message but no bytes: skip it.
                Ok(message) => self.pending = message,
                Err(TunnelError::Closed) => self.eof = true,
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_from(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.tunnel.poll_send_some(cx, buf).map_err(io_error)
    }

    fn close(&self) -> Poll<io::Result<()>> {
        self.tunnel.close();
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelIo")
            .field("tunnel", &self.tunnel)
            .field("buffered", &self.pending.len())
            .finish()
    }
}

/// A tunnel failure as an `io::Error` carrying the [`TunnelError`].
fn io_error(e: TunnelError) -> io::Error {
    let kind = match &e {
        TunnelError::Timeout => io::ErrorKind::TimedOut,
        TunnelError::Unreachable => io::ErrorKind::ConnectionReset,
        TunnelError::Closed => io::ErrorKind::BrokenPipe,
        TunnelError::TooLarge { .. } => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

impl tokio::io::AsyncRead for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = ready!(this.poll_read_into(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_from(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close()
    }
}

impl futures_lite::io::AsyncRead for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_into(cx, buf)
    }
}

impl futures_lite::io::AsyncWrite for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_from(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close()
    }
}
