//! # Coming from Iris
//!
//! Iris offers four ways to talk to a *cluster* of service instances:
//! request/reply (load balanced), broadcast, publish/subscribe on topics,
//! and tunnels. reign carries the same four, under the name **service
//! group** for an Iris cluster. Three things differ in shape:
//!
//! - **No relay.** An Iris client connects to a relay process on its
//!   machine; a reign node *is* the library, started in your process from a
//!   cluster spec, and talks mutual TLS to its peers directly.
//! - **No handler interface.** Iris calls a handler's methods on its own
//!   threads; in reign a member is a mailbox that joined a group, and your
//!   task receives requests, broadcasts and tunnel offers from it in the
//!   order they arrived, with as many tasks as you choose.
//! - **Typed messages.** Iris moves `[]byte`; reign moves any registered
//!   serde type (bytes too), and says which in the error when one is not
//!   registered.
//!
//! | Iris (Go binding) | reign | what differs, and why |
//! |---|---|---|
//! | `Connect(port)` | [`Node::start(&spec, id)`](crate::Node::start) | no relay: the node runs in-process; [`Node::start_dev`](crate::Node::start_dev) for a no-configuration loopback cluster |
//! | `Connection.Close()` | [`shutdown().await`](reign_driver::Reign::shutdown) | shutdown first delivers what was accepted |
//! | `Register(port, cluster, handler, limits)` | [`join(group, &member)`](reign_proto::Node::join) and a task reading `member`'s mailbox | a member is a mailbox; several may join from one process, and one mailbox may join several groups |
//! | `ServiceLimits{RequestThreads, RequestMemory}` | [`join_with_limits(group, &member, Limits { max_in_flight, max_queued_bytes })`](reign_proto::Node::join_with_limits) | handler slots and queued bytes per member; requests past them wait on the caller's node or fail with [`RequestError::Refused`](crate::RequestError) |
//! | `ServiceLimits{BroadcastThreads, BroadcastMemory}` | the member's mailbox share ([`Tuning::mailbox_unread_bytes`](crate::Tuning)) or [`Capacity`](crate::Capacity) | broadcasts are plain messages; how many tasks read them is yours to choose |
//! | `Service.Unregister()` | [`leave(group, &member)`](reign_proto::Node::leave), or close the mailbox | a closed mailbox leaves every group at once, on every node |
//! | `ServiceHandler.Init(conn)` | code before the receive loop | |
//! | `ServiceHandler.HandleRequest(req) ([]byte, error)` | [`recv_request().await`](crate::Mailbox::recv_request), then [`reply(value)`](crate::Request::reply) or [`reply_error(text)`](crate::Request::reply_error) | the caller's deadline travels with the request ([`time_remaining`](crate::Request::time_remaining)); a dropped request answers `Abandoned` by itself; typed: [`Request::into_call`](crate::Request::into_call) |
//! | `ServiceHandler.HandleBroadcast(msg)` | any other message in the member's mailbox | [`recv_type::<T>()`](crate::Mailbox::recv_type) or a match on [`Message::is`](crate::Message::is) |
//! | `ServiceHandler.HandleTunnel(tun)` | [`recv_tunnel().await`](crate::Mailbox::recv_tunnel), then [`accept_tunnel`](reign_driver::Reign::accept_tunnel) | a member may also refuse ([`IncomingTunnel::reject`](crate::IncomingTunnel)) |
//! | `ServiceHandler.HandleDrop(reason)` | the member's mailbox closes with an [`ExitReason`](crate::ExitReason) (`NodeShutdown`); peers: [`subscribe_connection_status`](reign_proto::Node::subscribe_connection_status) | there is no relay connection to drop |
//! | `Connection.Request(cluster, req, timeout)` | [`request(group, value, timeout).await`](reign_driver::Reign::request), typed [`call`](reign_driver::Reign::call) | each failure its own [`RequestError`](crate::RequestError) variant; a local member is preferred |
//! | `Connection.Broadcast(cluster, msg)` | [`broadcast(group, value)`](reign_proto::Node::broadcast) | encoded once, one copy per node |
//! | `Connection.Subscribe(topic, handler, limits)` | [`subscribe(topic, &mailbox)`](reign_proto::Node::subscribe), [`subscribe_with_limits`](reign_proto::Node::subscribe_with_limits) | events arrive as messages |
//! | `TopicHandler.HandleEvent(event)` | a message in the subscriber's mailbox | |
//! | `TopicLimits{EventThreads, EventMemory}` | the subscriber's mailbox share or [`Capacity`](crate::Capacity) | events over a subscriber's share are dropped and counted, never blocking the publisher |
//! | `Connection.Publish(topic, event)` | [`publish(topic, value)`](reign_proto::Node::publish) | |
//! | `Connection.Unsubscribe(topic)` | [`unsubscribe(topic, &mailbox)`](reign_proto::Node::unsubscribe) | |
//! | `Connection.Tunnel(cluster, timeout)` | [`tunnel(group, timeout).await`](reign_driver::Reign::tunnel) | to a group or to one address |
//! | `Tunnel.Send(msg, timeout)` | [`Tunnel::send(bytes, timeout)`](reign_driver::Tunnel::send) | credit-based flow control, messages up to `max_message_len` |
//! | `Tunnel.Recv(timeout)` | [`Tunnel::recv(timeout)`](reign_driver::Tunnel::recv) | as a byte stream: [`Tunnel::into_io`](reign_driver::Tunnel::into_io) (`AsyncRead`/`AsyncWrite`) |
//! | `Tunnel.Close()` | [`Tunnel::close()`](reign_driver::Tunnel::close), or drop it | |
//! | `ErrTimeout` | `Timeout` of [`RequestError`](crate::RequestError), [`TunnelError`](crate::TunnelError), [`RecvError`](crate::RecvError) | typed, per operation |
//! | `ErrClosed` | `Closed` of the same enums | |
//! | `RemoteError` | [`RequestError::Remote`](crate::RequestError), [`TunnelError::Remote`](crate::TunnelError) | |
//! | `Log` (log15) | `tracing` | |
//!
//! ## The four schemes, in Rust
//!
//! ```
//! use std::time::Duration;
//! use reign_tokio::{MailboxExt, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::local(); // Connect
//!
//! // Register: a member of the "echo" group and its handler task.
//! let (member, inbox) = node.new_mailbox();
//! node.join("echo", &member)?;
//! let handler = node.clone();
//! tokio::spawn(async move {
//!     loop {
//!         let Ok(msg) = inbox.recv().await else { break };
//!         if msg.is::<reign_tokio::Request>() {
//!             // HandleRequest
//!             let request = msg.take::<reign_tokio::Request>().unwrap();
//!             let (body, responder) = request.into_parts();
//!             let text = body.downcast::<String>().unwrap_or_default();
//!             let _ = responder.reply(text.to_uppercase());
//!         } else if msg.is::<reign_tokio::IncomingTunnel>() {
//!             // HandleTunnel: echo one message back.
//!             let incoming = msg.take::<reign_tokio::IncomingTunnel>().unwrap();
//!             let tunnel = handler.accept_tunnel(incoming).unwrap();
//!             let got = tunnel.recv(Duration::from_secs(5)).await.unwrap();
//!             tunnel.send(got, Duration::from_secs(5)).await.unwrap();
//!         } else if let Ok(n) = msg.downcast::<u32>() {
//!             // HandleBroadcast
//!             assert_eq!(n, 7);
//!         }
//!     }
//! });
//!
//! // Request
//! let reply = node.request("echo", String::from("hi"), Duration::from_secs(1)).await?;
//! assert_eq!(reply.downcast::<String>().unwrap(), "HI");
//! // Broadcast
//! node.broadcast("echo", 7u32)?;
//! // Subscribe and Publish
//! let (subscriber, events) = node.new_mailbox();
//! node.subscribe("news", &subscriber)?;
//! node.publish("news", String::from("extra"))?;
//! let event = events.recv_timeout(Duration::from_secs(1)).await?;
//! assert_eq!(event.downcast::<String>().unwrap(), "extra");
//! // Tunnel
//! let tunnel = node.tunnel("echo", Duration::from_secs(1)).await?;
//! tunnel.send(&b"ping"[..], Duration::from_secs(1)).await?;
//! assert_eq!(&tunnel.recv(Duration::from_secs(1)).await?[..], b"ping");
//! node.shutdown().await; // Close
//! # Ok(())
//! # }
//! ```
