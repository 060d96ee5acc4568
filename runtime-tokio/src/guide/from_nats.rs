//! # Coming from NATS
//!
//! NATS routes by **subject** through a server; reign has no server: every
//! node of the cluster is a peer, and routes by **topic** (publish/subscribe,
//! to every subscriber) or by **service group** (request/reply to one
//! member, broadcast to all). Names are exact: there are no subject
//! wildcards and no subject hierarchy, because topics and groups are entries
//! of a replicated registry, not patterns matched per message.
//!
//! | NATS | reign | what differs, and why |
//! |---|---|---|
//! | `nats.Connect(url)` | [`Node::start(&spec, id)`](crate::Node::start) | no server: nodes form a mesh over mutual TLS |
//! | a subject | a topic (pub/sub) or a group name (request/reply, broadcast) | exact names, no `*` or `>` |
//! | `nc.Publish(subj, data)` | [`publish(topic, value)`](reign_proto::Node::publish) | any registered serde type, not only bytes; one copy per interested node |
//! | `nc.Subscribe(subj, handler)` | [`subscribe(topic, &mailbox)`](reign_proto::Node::subscribe) and a task reading the mailbox | a mailbox instead of a callback; [`Mailbox`](crate::Mailbox) is a `futures::Stream`, like a NATS subscription in the Rust client |
//! | `sub.Unsubscribe()` | [`unsubscribe(topic, &mailbox)`](reign_proto::Node::unsubscribe), or close the mailbox | |
//! | `nc.QueueSubscribe(subj, queue, handler)` | [`join(group, &mailbox)`](reign_proto::Node::join) | a group member gets requests one member at a time (load balanced, local first) and every broadcast |
//! | publish to a queue group (one member gets it) | [`request(group, value, timeout)`](reign_driver::Reign::request) (reply `()` if nothing to say) | reign's one-of-a-group delivery is request/reply: the member's handler slots ([`Limits`](crate::Limits)) give backpressure, and the caller learns of failure |
//! | `nc.Request(subj, data, timeout)` | [`request(group, value, timeout).await`](reign_driver::Reign::request), typed [`call`](reign_driver::Reign::call) | no inbox subject: the reply comes back on the request's own route; `NoMember`, `Timeout`, `Remote`, `Abandoned` are distinct errors |
//! | `msg.Respond(data)` | [`Request::reply(value)`](crate::Request::reply) | also [`reply_error`](crate::Request::reply_error); the caller's deadline comes with the request |
//! | `nc.Flush()` | nothing to wait for: `send`/`publish` return once queued; [`sync().await`](reign_proto::Node::sync) waits for registry changes (subscriptions, joins) to reach every peer | |
//! | `nc.Drain()` | [`shutdown().await`](reign_driver::Reign::shutdown) | refuses new sends, then delivers what was accepted within `Tuning::drain_timeout` |
//! | disconnect / reconnect handlers | [`subscribe_connection_status(&mailbox)`](reign_proto::Node::subscribe_connection_status) | per peer node, with the close reason |
//! | slow consumer | a subscriber over its share ([`Tuning::mailbox_unread_bytes`](crate::Tuning)) misses events, counted | the publisher and the link never block |
//! | `max_payload` | [`Tuning::max_message_len`](crate::Tuning) | large messages are split and never hold up small ones |
//! | headers | fields of your message type | |
//! | JetStream | none | delivery is at most once; persistence is the application's |
//! | NKeys / credentials | a certificate per node from the cluster CA (`reign init`) | |
//!
//! ## Publish/subscribe and a queue group, in Rust
//!
//! ```
//! use std::time::Duration;
//! use futures_lite::StreamExt;
//! use reign_tokio::{MailboxExt, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::local();
//!
//! // Subscribe; the mailbox is a stream of what is published.
//! let (subscriber, mut updates) = node.new_mailbox();
//! node.subscribe("prices", &subscriber)?;
//! node.publish("prices", 101u32)?;
//! node.publish("prices", 102u32)?;
//! let first = updates.next().await.expect("open").downcast::<u32>().unwrap();
//! assert_eq!(first, 101);
//!
//! // A queue group of two workers answering requests.
//! for worker in 0..2u32 {
//!     let (member, requests) = node.new_mailbox();
//!     node.join("quote", &member)?;
//!     tokio::spawn(async move {
//!         while let Ok(request) = requests.recv_request().await {
//!             let (symbol, responder) = request.into_parts();
//!             let symbol = symbol.downcast::<String>().unwrap_or_default();
//!             let _ = responder.reply(format!("{symbol}: 42 (worker {worker})"));
//!         }
//!     });
//! }
//! for _ in 0..4 {
//!     // nc.Request
//!     let reply = node.request("quote", String::from("RST"), Duration::from_secs(1)).await?;
//!     assert!(reply.downcast::<String>().unwrap().starts_with("RST: 42"));
//! }
//! let second = updates.recv_timeout(Duration::from_secs(1)).await?;
//! assert_eq!(second.downcast::<u32>().unwrap(), 102);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
