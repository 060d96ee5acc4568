//! The socket options of a node link, set in one place: every runtime
//! adapter calls [`tune_node_socket`] on each socket it connects or
//! accepts (`Runtime::connect` / `Runtime::accept`), so the three runtimes
//! cannot drift apart.
//!
//! - `TCP_NODELAY`: latency matters more than packet count; the core
//!   already coalesces frames into TLS records.
//!
//! **`TCP_NOTSENT_LOWAT` is not set**, though it was tried (stop 27): with
//! it the kernel keeps only that many unsent bytes, so a flood's backlog
//! waits in the outbox's lanes, where a request to another mailbox
//! overtakes it, instead of the kernel's send buffer (up to 4 MiB). At
//! 128 KiB, request p99 under a 64 B flood went from 697 to 280 µs
//! (medians of 3 on a loaded machine) while p999 moved either way between
//! series (tens to hundreds of ms, much of it the receiver's queue and
//! retransmits); at 1 MiB, p99 was 245 µs and 24 ms against 111 and 156 µs
//! without. And 4 KiB messages lost throughput in the same runs: 731
//! against 816–891 MB/s at 128 KiB, 860–912 against 898–951 at 1 MiB. The receiving side's kernel queue, where most
//! of a flood waits, is not bounded either: a fixed `SO_RCVBUF` small
//! enough to help caps a long link at buffer ÷ round trip and, measured on
//! loopback, made the kernel drop and retransmit. BENCHMARKS.md, "Kernel
//! socket buffers under a flood", has the figures.
//!
//! A failed option is ignored: the link works without it, only with more
//! waiting in the kernel.

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
}
