//! # reign-proto: the Sans-IO core of reign
//!
//! reign is an Erlang-like clustering and messaging library. Processes own
//! **mailboxes**; anyone holding an **address** can send to it, on this node
//! or any node of the cluster. This crate holds everything that does not
//! touch a socket or a clock: mailboxes and addresses, dynamic messages, the
//! wire codec, and (in later modules) the peer state machine, the registry
//! and the messaging schemes. Runtime adapters (`reign-tokio`,
//! `reign-async-std`, `reign-smol`) move bytes between sockets and this core.
//!
//! ```
//! use reign_proto::{Incarnation, Node};
//!
//! let node = Node::local(Incarnation(1));
//! let (addr, mailbox) = node.new_mailbox();
//! addr.send(String::from("hello")).unwrap();
//! let msg = mailbox.try_recv().unwrap().expect("a message");
//! assert_eq!(msg.downcast::<String>().unwrap(), "hello");
//! ```
//!
//! ## One call style
//!
//! Every call follows one rule: **a message is handed over by value; what
//! a call only names is borrowed.**
//!
//! - The message moves into the call, as into a channel's `send`:
//!   [`Address::send`], [`Node::request`], [`Node::broadcast`],
//!   [`Node::publish`], [`Responder::reply`] and the tunnels' `send` (any
//!   `impl Into<Bytes>`). A local send moves the value into the mailbox
//!   without encoding it; a remote or fan-out send encodes it once and drops
//!   it. To keep a copy, clone before the call.
//! - What a call names is borrowed: group, topic and registered names are
//!   `&str`, addresses are `&Address` ([`Node::register`], [`Node::join`],
//!   [`Node::subscribe`], [`Address::on_close_notify`]); a request's or
//!   tunnel's destination is `impl Into<Target>` (a group name or an
//!   `&Address`).
//! - Arguments come in one order: the destination, then the message, then
//!   the timeout (or deadline).
//!
//! ```
//! use reign_proto::{Incarnation, Node};
//!
//! let node = Node::local(Incarnation(1));
//! let (member, mailbox) = node.new_mailbox();
//! node.join("workers", &member).unwrap(); // names: borrowed
//! node.subscribe("news", &member).unwrap();
//! let job = String::from("job 1");
//! member.send(job.clone()).unwrap(); // messages: by value
//! node.broadcast("workers", job).unwrap();
//! node.publish("news", 7u64).unwrap();
//! assert_eq!(mailbox.message_count(), 3);
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "certgen")]
pub mod certgen;
pub mod close;
pub mod codec;
pub mod control;
pub mod core;
pub mod error;
pub mod handshake;
pub mod id;
pub mod log_summary;
pub mod node;
pub mod poison;
pub use node::{address, mailbox, message, services, task, tunnel, typed};
pub mod registry;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;
pub mod stats;
pub mod system;
pub mod tls;
pub mod types;

pub use address::Address;
pub use close::{CloseReason, Removal};
pub use core::{ConnId, Core, CoreConfig, Event, Input, Output, ReloadError, Reloaded, ID_IN_USE};
pub use error::{BatchError, DecodeError, RecvError, SendError};
pub use id::{Incarnation, MailboxId, NodeId, ParseIdError};
pub use mailbox::{Capacity, Mailbox};
pub use message::{DowncastError, Message, RAW_BYTES_NAME};
pub use node::outbox::{InlineReceive, InlineTransmit, PeerStats, WakeSignal, MESSAGE_COST};
pub use node::{Node, SyncFuture, MAX_RECENT_EXITS};
pub use registry::{RegistryDump, RegistryError};
pub use services::{
    Limits, Request, RequestError, RequestFuture, RequestTables, Responder, Target,
};
pub use spec::{ClusterSpec, NodeDescriptor, ResolvedSpec, SpecError, Tuning};
pub use stats::NodeStats;
pub use system::{ConnectionStatus, Exit, ExitReason, MailboxClosed, MultipleClaim};
pub use task::{Task, TaskExit};
pub use tunnel::{IncomingTunnel, OpeningTunnel, Tunnel, TunnelError};
pub use typed::{Call, TypedAddress, TypedMailbox, TypedResponder};
pub use types::{register_type, register_type_named, TypeError, TypeTag};
