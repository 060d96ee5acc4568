//! # reign on tokio
//!
//! Erlang-like clustering and messaging: mailboxes and addresses that work
//! the same on one node or across a cluster, over mutual TLS. This crate
//! binds reign's Sans-IO core to tokio's sockets and timer; everything else
//! is shared with the async-std and smol adapters, which have the same API.
//!
//! Start with [`Node`]: its page lists every method a node has. Coming
//! from Go reign, Iris, Erlang or NATS? The [`guide`] maps what you know
//! onto reign, row by row.
//!
//! In the ecosystem's terms: a [`Mailbox`] is a `futures::Stream` of its
//! messages; a [`Tunnel`] is a stream of messages, and
//! [`Tunnel::into_io`](reign_driver::Tunnel::into_io) turns it into a
//! byte stream implementing `tokio::io::{AsyncRead, AsyncWrite}` (for
//! `tokio::io::copy`, codecs, TLS); errors are `#[non_exhaustive]` enums
//! with their causes behind `source()`; messages go by value (see
//! `reign_proto`'s *One call style*); and [`TypedAddress`] and
//! [`call`](reign_driver::Reign::call) add compile-time types over the
//! dynamic messages.
//!
//! ```
//! use std::time::Duration;
//! use reign_tokio::{MailboxExt, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let node = Node::local();
//! let (addr, mailbox) = node.new_mailbox();
//! addr.send(String::from("hello")).unwrap();
//! let msg = mailbox.recv_timeout(Duration::from_secs(1)).await.unwrap();
//! assert_eq!(msg.downcast::<String>().unwrap(), "hello");
//! # }
//! ```

use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub mod guide;

/// The admin endpoint (feature `admin`): JSON status, `/metrics`, a live dashboard.
#[cfg(feature = "admin")]
pub use reign_driver::admin;
pub use reign_driver::api::*;
pub use reign_driver::Runtime;

/// The tokio runtime, as reign's driver sees it. Spawns on the ambient
/// runtime: start nodes from inside one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

reign_driver::adapter!(Tokio, "tokio");

fn split(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    reign_driver::sockopt::tune_node_socket(&stream);
    stream.into_split()
}

impl Runtime for Tokio {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;
    type Listener = TcpListener;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(deadline.into())
    }

    async fn bind(&self, address: &str) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(OwnedReadHalf, OwnedWriteHalf, String)> {
        let (stream, remote) = listener.accept().await?;
        let (r, w) = split(stream);
        Ok((r, w, remote.to_string()))
    }

    async fn connect(&self, address: &str) -> io::Result<(OwnedReadHalf, OwnedWriteHalf)> {
        Ok(split(TcpStream::connect(address).await?))
    }

    fn poll_read(
        reader: &mut OwnedReadHalf,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(reader).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_read_now(
        reader: &mut OwnedReadHalf,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // tokio reads only once its poller saw the socket readable; bytes
        // that arrived since are still read here, straight from the socket.
        let socket = socket2::SockRef::from(reader.as_ref());
        match (&*socket).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Self::poll_read(reader, cx, buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Self::poll_read(reader, cx, buf),
            result => Poll::Ready(result),
        }
    }

    fn poll_write(
        writer: &mut OwnedWriteHalf,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(writer).poll_write(cx, buf)
    }

    fn poll_close(writer: &mut OwnedWriteHalf, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(writer).poll_shutdown(cx)
    }
}
