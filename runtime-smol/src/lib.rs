//! # reign on smol
//!
//! Erlang-like clustering and messaging: mailboxes and addresses that work
//! the same on one node or across a cluster, over mutual TLS. This crate
//! binds reign's Sans-IO core to smol's sockets and timer; everything else
//! is shared with the tokio and async-std adapters, which have the same API.
//! Tasks run on smol's global executor (`SMOL_THREADS` sets its threads).
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
//! use reign_smol::{MailboxExt, Node};
//!
//! smol::block_on(async {
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
//! use reign_smol::{ClusterSpec, Node, NodeId};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let node = Node::start(&ClusterSpec::load("cluster.json")?, NodeId(1)).await?;
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

/// The smol runtime, as reign's driver sees it: tasks on smol's global
/// executor, sockets and timers from async-io.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

reign_driver::adapter!(Smol, "smol");

reign_driver::futures_io_runtime!(
    Smol,
    listener: smol::net::TcpListener,
    stream: smol::net::TcpStream,
    spawn: |future| smol::spawn(future).detach(),
    sleep_until: |deadline| async move {
        smol::Timer::at(deadline).await;
    },
);
