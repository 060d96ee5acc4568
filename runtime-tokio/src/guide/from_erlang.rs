//! # Coming from Erlang
//!
//! reign's promise is Erlang's: processes own mailboxes, messages are
//! delivered at most once and in order per pair, links and monitors tell
//! you when something died and why, across nodes as on one. A process is a
//! task (or a thread) that owns a [`Mailbox`](crate::Mailbox); a pid is an
//! [`Address`](crate::Address).
//!
//! | Erlang | reign | what differs, and why |
//! |---|---|---|
//! | a pid | [`Address`](crate::Address) (its [`MailboxId`](crate::MailboxId) is `<node.incarnation.serial>`) | a process may own several mailboxes, or none |
//! | `self()` | [`Mailbox::address()`](crate::Mailbox::address) | |
//! | `spawn(Fun)` | [`spawn(\|mailbox\| async { .. })`](reign_driver::Reign::spawn) → `Address` | the task's return value is its exit reason ([`TaskExit`](crate::TaskExit)): `Ok`/`()` is `normal`, `Err(e)` an error, a panic is caught and reported |
//! | `spawn_link(Fun)` | [`spawn_linked(&parent, f)`](reign_driver::Reign::spawn_linked) | linked before it runs |
//! | `Pid ! Msg` | [`addr.send(msg)`](crate::Address::send) | returns an error when it certainly was not delivered (closed, full, not registered) |
//! | `receive .. end` | [`recv().await`](crate::Mailbox::recv), selective: [`recv_match(f)`](crate::Mailbox::recv_match), [`recv_type::<T>()`](crate::Mailbox::recv_type) | unmatched messages stay queued, in order, as in Erlang |
//! | `receive .. after T` | [`recv_timeout(T)`](crate::MailboxExt::recv_timeout) | |
//! | `register(Name, Pid)`, `whereis(Name)` | [`register(name, &addr)`](reign_proto::Node::register), [`lookup(name)`](reign_proto::Node::lookup) | every name is cluster-wide: there is no node-local name table |
//! | `global:register_name`, `global:whereis_name` | the same [`register`](reign_proto::Node::register)/[`lookup`](reign_proto::Node::lookup) | no cluster lock: each node owns its claims; a name claimed on two nodes (after a partition heals) keeps both, [`lookup_all`](reign_proto::Node::lookup_all) lists them, and each claimant gets a [`MultipleClaim`](crate::MultipleClaim) message to resolve it |
//! | `link(Pid)`, `unlink(Pid)` | [`mailbox.link(&addr)`](crate::Mailbox::link), [`unlink`](crate::Mailbox::unlink) | two-way, across nodes too |
//! | `process_flag(trap_exit, true)` | [`trap_exits(true)`](crate::Mailbox::trap_exits) | |
//! | `{'EXIT', Pid, Reason}` | an [`Exit { from, reason }`](crate::Exit) message | |
//! | `exit(Pid, kill)` | [`addr.kill()`](crate::Address::kill) | ends a task stuck in an `.await`, from any node |
//! | `monitor(process, Pid)`, `demonitor` | [`addr.on_close_notify(&watcher)`](crate::Address::on_close_notify), [`remove_notify`](crate::Address::remove_notify) | |
//! | `{'DOWN', Ref, process, Pid, Reason}` | a [`MailboxClosed { id, reason }`](crate::MailboxClosed) message | |
//! | `noconnection` | [`ExitReason::Unreachable`](crate::ExitReason) (with the connection's close reason) | |
//! | `monitor_node`, `net_kernel:monitor_nodes` | [`subscribe_connection_status(&watcher)`](reign_proto::Node::subscribe_connection_status) | [`ConnectionStatus`](crate::ConnectionStatus) messages |
//! | `node()`, `nodes()` | [`id()`](reign_proto::Node::id), [`cluster_members()`](reign_proto::Node::cluster_members) | |
//! | `pg:join(Group, Pid)`, `pg:leave` | [`join(group, &addr)`](reign_proto::Node::join), [`leave`](reign_proto::Node::leave) | a group is also a service: [`request`](reign_driver::Reign::request) goes to one member, [`broadcast`](reign_proto::Node::broadcast) to all |
//! | `pg:get_members(Group)` | [`members(group)`](reign_proto::Node::members) | |
//! | `gen_server:call(S, Req, T)` | [`request(&addr, req, T).await`](reign_driver::Reign::request), typed [`call`](reign_driver::Reign::call) | the reply is a [`Responder`](crate::Responder), not a `From` tag: answer once, from any task; a dropped request answers `Abandoned`, so a caller never waits past its timeout |
//! | `handle_call` returning `{reply, R, S}` | [`Request::reply(R)`](crate::Request::reply) | or [`Request::into_call`](crate::Request::into_call) for a typed reply |
//! | `gen_server:cast(S, Msg)` | [`addr.send(msg)`](crate::Address::send) | a cast is just a message |
//! | `gen_server:abcast`, `multi_call` | [`broadcast(group, msg)`](reign_proto::Node::broadcast) | |
//! | `supervisor` | [`supervise(name, SupervisorSpec)`](reign_driver::Reign::supervise) | one-for-one, one-for-all, rest-for-one, intensity, shutdown timeouts (see the README's supervision section) |
//! | distribution cookie | mutual TLS with a cluster CA | each node's certificate names its node id |
//!
//! ## A gen_server, a monitor and a link
//!
//! ```
//! use std::time::Duration;
//! use reign_tokio::{Call, Exit, ExitReason, MailboxClosed, Node};
//!
//! // The server's protocol: a call with its reply type, and a cast.
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Get;
//! impl Call for Get {
//!     type Reply = u64;
//! }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Add(u64);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! reign_tokio::register_type_named::<Get>("guide.erlang.Get")?;
//! reign_tokio::register_type_named::<Add>("guide.erlang.Add")?;
//! let node = Node::local();
//!
//! // spawn: the state lives in the task, as in a gen_server loop.
//! let counter = node.spawn(|mailbox| async move {
//!     let mut total = 0u64;
//!     while let Ok(msg) = mailbox.recv().await {
//!         match msg.take::<reign_tokio::Request>() {
//!             // handle_call
//!             Ok(request) => {
//!                 if let Ok((Get, reply)) = request.into_call::<Get>() {
//!                     let _ = reply.reply(total);
//!                 }
//!             }
//!             // handle_cast
//!             Err(msg) => {
//!                 if let Ok(Add(n)) = msg.downcast::<Add>() {
//!                     total += n;
//!                 }
//!             }
//!         }
//!     }
//! });
//! node.register("counter", &counter)?; // global:register_name
//!
//! let server = node.lookup("counter").expect("registered"); // whereis
//! server.send(Add(40))?; // gen_server:cast
//! server.send(Add(2))?;
//! let total = node.call(&server, Get, Duration::from_secs(1)).await?; // gen_server:call
//! assert_eq!(total, 42);
//!
//! // monitor: a MailboxClosed ('DOWN') with the reason.
//! let (watcher, downs) = node.new_mailbox();
//! server.on_close_notify(&watcher);
//! server.kill()?; // exit(Pid, kill)
//! let down: MailboxClosed = downs.recv_type().await?;
//! assert_eq!(down.reason, ExitReason::Killed);
//!
//! // link + trap_exit: the worker's failure arrives as an Exit message.
//! let (_, parent) = node.new_mailbox();
//! parent.trap_exits(true);
//! node.spawn_linked(&parent.address(), |_| async { Err::<(), _>("crashed".to_string()) });
//! let exit: Exit = parent.recv_type().await?;
//! assert_eq!(exit.reason, ExitReason::Error("crashed".into()));
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
