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

    /// Reads some bytes into `buf`; `Ok(0)` at end of stream. Registers
    /// `cx`'s waker when nothing is there yet.
    fn poll_read(
        reader: &mut Self::Reader,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>>;

    /// As [`poll_read`](Runtime::poll_read), but first asks the socket
    /// itself, whatever readiness the runtime last saw: bytes that arrived
    /// after the runtime's poller last looked are read now, before its
    /// thread has woken. The driver's inline receive uses it (a receiving
    /// thread reads the socket of a sleeping driver); `cx` is the driver's
    /// own, so a socket with nothing registers the driver as `poll_read`
    /// would. The default is `poll_read`, right for runtimes whose reads
    /// already try the socket first (async-io's).
    fn poll_read_now(
        reader: &mut Self::Reader,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Self::poll_read(reader, cx, buf)
    }

    /// Writes some of `buf`, returning how much. Registers `cx`'s waker
    /// when the socket cannot take more yet.
    fn poll_write(
        writer: &mut Self::Writer,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>>;

    /// Flushes and shuts the write direction down.
    fn poll_close(
        writer: &mut Self::Writer,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>>;
}
