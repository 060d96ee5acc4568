//! The socket options of a node link, set in one place: every runtime
//! adapter calls [`tune_node_socket`] on each socket it connects or
//! accepts (`Runtime::connect` / `Runtime::accept`), so the three runtimes
//! cannot drift apart.
//!
//! - `TCP_NODELAY`: latency matters more than packet count; the core
//!   already coalesces frames into TLS records.
//! - `TCP_NOTSENT_LOWAT` (Linux, Android): the kernel keeps at most
//!   [`NOTSENT_LOWAT`] bytes it has not sent yet, and a write of more waits
//!   (the socket reports writable again when the unsent bytes fall under
//!   half of it). Without it, a flood fills the kernel's send buffer (up to
//!   `tcp_wmem`'s maximum, 4 MiB by default) and a request written after it
//!   waits behind all of it in one FIFO; with it, that backlog stays in the
//!   outbox's lanes (`reign_proto`'s `node/outbox.rs`), where a request to
//!   another mailbox overtakes it. It bounds only what is *unsent*: bytes in
//!   flight are still bounded by the congestion and receive windows alone,
//!   so a link with a long round trip keeps its throughput.
//!
//! What this does not bound is the receiver's kernel receive queue, where a
//! flood the receiving driver cannot keep up with still waits in one FIFO
//! (BENCHMARKS.md, issue 17, "Kernel socket buffers under a flood"): a fixed
//! `SO_RCVBUF` small enough to help caps a long link's throughput at
//! buffer ÷ round trip and, measured on loopback, made the kernel drop and
//! retransmit, so it is not set here.
//!
//! A failed option is ignored: the link works without it, only with more
//! waiting in the kernel.

/// Unsent bytes the kernel may hold per node socket (`TCP_NOTSENT_LOWAT`).
///
/// 128 KiB is eight full TLS records: the kernel asks for more when fewer
/// than 64 KiB are left unsent, which is about 0.5 ms of data at the
/// ~130 MB/s a flood moves over loopback here and 50 µs at 10 Gbit/s, more
/// than a driver wake-up takes, so the link does not run dry between
/// writes; and it is 1/32 of the 4 MiB the kernel's send buffer otherwise
/// grows to, part of what a request waited behind. Measured:
/// 32 KiB and 128 KiB gave flood rates within each other's spread;
/// round trips did not change, one-way throughput may be ~4% lower, and
/// 256 KiB did not do better (BENCHMARKS.md).
pub const NOTSENT_LOWAT: u32 = 128 << 10;

/// Sets a node socket's options (this module's header says which and why).
/// Errors are ignored: every option only tunes a working socket.
#[cfg(unix)]
pub fn tune_node_socket(socket: &impl std::os::fd::AsFd) {
    tune(socket2::SockRef::from(socket));
}

/// Sets a node socket's options (this module's header says which and why).
/// Errors are ignored: every option only tunes a working socket.
#[cfg(windows)]
pub fn tune_node_socket(socket: &impl std::os::windows::io::AsSocket) {
    tune(socket2::SockRef::from(socket));
}

fn tune(socket: socket2::SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_notsent_lowat(NOTSENT_LOWAT);
}
