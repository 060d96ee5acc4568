//! What an async runtime must provide to drive a reign node: spawning,
//! TCP sockets and a timer. Each adapter crate implements this and nothing
//! else.

use std::future::Future;
use std::io;
use std::time::Instant;

/// An async runtime, as seen by the driver.
///
/// Implementations are tiny: each method is one call into the runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The reading half of a TCP connection.
    type Reader: Send + 'static;
    /// The writing half of a TCP connection.
    type Writer: Send + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;

    /// Runs a future to completion in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// Completes after `duration`.
    fn sleep(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until(Instant::now() + duration)
    }

    /// Binds a listener (`host:port`).
    fn bind(&self, address: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address a listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<std::net::SocketAddr>;

    /// Accepts one connection: its halves and the remote address for logs.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer, String)>> + Send;

    /// Dials `address` (`host:port`).
    fn connect(
        &self,
        address: &str,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>> + Send;

    /// Reads some bytes; `Ok(0)` at end of stream.
    fn read(
        reader: &mut Self::Reader,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes all of `buf`.
    fn write_all(
        writer: &mut Self::Writer,
        buf: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Flushes and shuts the write direction down.
    fn close(writer: &mut Self::Writer) -> impl Future<Output = io::Result<()>> + Send;
}
