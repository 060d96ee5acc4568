//! The shared layer: everything user threads and the node's driver touch
//! together, behind one [`Node`].
//!
//! Below this folder sits the Sans-IO connection machine ([`crate::core`]),
//! which owns connections and runs on the driver's task; this folder is the
//! other half, the state that any thread may reach through a handle:
//!
//! | file | owns |
//! |---|---|
//! | [`handle`] | [`Node`], the user's handle, and [`SyncFuture`] |
//! | [`address`], [`mailbox`], [`message`] | the user's handles on mailboxes and the dynamic message |
//! | [`services`] | the user's side of request/reply, broadcast and publish, and the per-node request tables |
//! | [`tunnel`] | the user's tunnel handles and one tunnel end's flow control |
//! | [`task`] | tasks tied to mailboxes: [`Node::task`], the abortable [`task::Task`] future, exit reasons from outputs and panics |
//! | `outbox` | the network as user threads see it: one outbound queue per peer, the receive budget, the wake signal |
//! | `inner` | `NodeInner`: the mailbox table, the close-watch and link protocol (`links`), the registry's effects and syncs (`registry`), and the node's side of services and tunnels |
//!
//! The handles hold a `Weak<NodeInner>` and `NodeInner` hands out handles,
//! so the files of this folder import each other; nothing outside it is
//! imported back by them except the ground modules (ids, codec, errors,
//! the pure registry).

pub mod address;
pub mod handle;
pub(crate) mod inner;
pub mod mailbox;
pub mod message;
pub(crate) mod outbox;
pub mod services;
pub mod task;
pub mod tunnel;
pub mod typed;

pub use handle::Node;
pub(crate) use inner::NodeInner;
pub use inner::{SyncFuture, MAX_RECENT_EXITS};
