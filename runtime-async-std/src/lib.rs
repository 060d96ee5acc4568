//! # reign on async-std
//!
//! **async-std has been discontinued upstream; its README points to smol as
//! the successor. Prefer [`reign-smol`](https://docs.rs/reign-smol) for new
//! code.** This adapter stays for applications already on async-std: it has
//! exactly the API of the tokio and smol adapters, and does not pull tokio in.
//!
//! Erlang-like clustering and messaging: mailboxes and addresses that work
//! the same on one node or across a cluster, over mutual TLS.
//!
//! Start with [`Node`]: its page lists every method a node has.
//! A [`Mailbox`] is a `futures::Stream`, and
//! [`Tunnel::into_io`](reign_driver::Tunnel::into_io) gives a tunnel's byte
//! stream with the `futures::io` `AsyncRead`/`AsyncWrite` traits (for
//! `futures_lite::io::copy` and friends). The guides for people coming from
//! Go reign, Iris, Erlang and NATS are in the tokio adapter's docs
//! (`reign_tokio::guide`): the API is the same on every runtime.
//!
//! ```
//! use std::time::Duration;
//! use reign_async_std::{MailboxExt, Node};
//!
//! async_std::task::block_on(async {
//!     let node = Node::local();
//!     let (addr, mailbox) = node.new_mailbox();
//!     addr.send(String::from("hello")).unwrap();
//!     let msg = mailbox.recv_timeout(Duration::from_secs(1)).await.unwrap();
//!     assert_eq!(msg.downcast::<String>().unwrap(), "hello");
//! });
//! ```
//!
//! A node of a cluster starts from a cluster spec (`reign init` writes one):
//!
//! ```no_run
//! use reign_async_std::{ClusterSpec, Node, NodeId};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     async_std::task::block_on(async {
//!         let node = Node::start(&ClusterSpec::load("cluster.json")?, NodeId(2)).await?;
//!         node.shutdown().await;
//!         Ok(())
//!     })
//! }
//! ```

/// The admin endpoint (feature `admin`): JSON status, `/metrics`, a live dashboard.
#[cfg(feature = "admin")]
pub use reign_driver::admin;
pub use reign_driver::api::*;
pub use reign_driver::Runtime;

/// The async-std runtime, as reign's driver sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

reign_driver::adapter!(AsyncStd, "async-std");

reign_driver::futures_io_runtime!(
    AsyncStd,
    listener: async_std::net::TcpListener,
    stream: async_std::net::TcpStream,
    // Dropping the handle detaches the task.
    spawn: |future| drop(async_std::task::spawn(future)),
    // async-std keeps async-io's `Timer` private: sleep for what is left,
    // measured when first polled.
    sleep_until: |deadline| async move {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        async_std::task::sleep(left).await;
    },
);
