//! # Coming from Go reign
//!
//! reign for Rust keeps Go reign's model (mailboxes, addresses that work
//! the same on every node, a cluster-wide name registry, close
//! notifications) and its spec file. What changes is the shape a Rust
//! program expects: one `Node` value instead of a pair of services,
//! `async` receives instead of contexts, `Result`s instead of panics, serde
//! instead of gob, and `tracing` instead of a logger interface.
//!
//! | Go reign | reign for Rust | what differs, and why |
//! |---|---|---|
//! | `CreateFromSpecFile(path, id, log)` | [`ClusterSpec::load`](crate::ClusterSpec::load) then [`Node::start`](crate::Node::start) | one [`Node`](crate::Node) holds both the connection service and the names; the spec keeps Go reign's JSON field names |
//! | `CreateFromSpec(spec, id, log)` | [`Node::start(&spec, NodeId(id))`](crate::Node::start) | the spec is a plain struct ([`ClusterSpec`](crate::ClusterSpec)); a bad one is a typed [`StartError`](crate::StartError) naming the field |
//! | `CreateFromReader(r, id, log)` | [`ClusterSpec::from_reader`](crate::ClusterSpec) then `Node::start` | |
//! | `NoClustering(log)` | [`Node::local()`](crate::Node::local) | the same API with no network; [`Node::start_dev`](crate::Node::start_dev) adds a throw-away loopback cluster with no configuration |
//! | `ConnectionService.Serve()` / `Stop()` / `Terminate()` | the node runs once started; [`shutdown().await`](reign_driver::Reign::shutdown) | no suture service to run: the node's tasks run on your runtime; shutdown first delivers what was accepted (`Tuning::drain_timeout`) |
//! | `AddConnectionStatusCallback(f)` | [`subscribe_connection_status(&addr)`](reign_proto::Node::subscribe_connection_status), [`is_connected`](reign_proto::Node::is_connected), [`wait_for_peers`](reign_driver::Reign::wait_for_peers) | a [`ConnectionStatus`](crate::ConnectionStatus) message (with the close reason) to a mailbox instead of a callback on the connection's goroutine |
//! | `RegisterType(value)` | [`register_type::<T>()`](crate::register_type), [`register_type_named::<T>(name)`](crate::register_type_named) | serde and CBOR instead of gob; a stable name makes the wire tag independent of the Rust path. An unregistered type is refused on a local send too, so one node behaves as a cluster |
//! | `NewMailbox()` | [`new_mailbox()`](reign_proto::Node::new_mailbox) → `(Address, Mailbox)` | also bounded ([`new_mailbox_with_capacity`](reign_proto::Node::new_mailbox_with_capacity)) and typed ([`new_typed_mailbox`](reign_proto::Node::new_typed_mailbox)) |
//! | `Address.Send(m)` | [`Address::send(m)`](crate::Address::send) | returns a [`SendError`](crate::SendError): an error means not delivered; `Ok` means accepted (at most once, as in Go reign) |
//! | `Address.OnCloseNotify(watcher)` | [`on_close_notify(&watcher)`](crate::Address::on_close_notify) | the [`MailboxClosed`](crate::MailboxClosed) notice carries an [`ExitReason`](crate::ExitReason) |
//! | `Address.RemoveNotify(watcher)` | [`remove_notify(&watcher)`](crate::Address::remove_notify) | |
//! | `Address.GetID()` | [`Address::id()`](crate::Address::id) | |
//! | `MailboxID.NodeID()` | [`MailboxId::node`](crate::MailboxId) | a mailbox id also names its node's incarnation, so an address of a restarted node stays dead instead of reaching a new mailbox |
//! | `Address.MarshalBinary`/`UnmarshalBinary`, `MarshalJSON`/`UnmarshalJSON` | `Serialize`/`Deserialize` of [`Address`](crate::Address) | an address inside a message reconnects on the receiving node; outside one, [`bind_scope`](reign_proto::Node::bind_scope) says which node |
//! | `Address.MarshalText`/`UnmarshalText`, `String()` | `Display` and `FromStr` of [`MailboxId`](crate::MailboxId) | `<node.incarnation.serial>` |
//! | `Address.UnmarshalFromID(id)` | [`address_of(id)`](reign_proto::Node::address_of) | |
//! | `Mailbox.Receive(ctx)` | [`recv().await`](crate::Mailbox::recv), [`recv_timeout`](crate::MailboxExt::recv_timeout) | cancel by dropping the future (it is cancel-safe); a mailbox is also a `futures::Stream` |
//! | `Mailbox.ReceiveAsync()` | [`try_recv()`](crate::Mailbox::try_recv) | |
//! | `Mailbox.ReceiveMatch(ctx, f)` | [`recv_match(f)`](crate::Mailbox::recv_match), [`recv_type::<T>()`](crate::Mailbox::recv_type) | |
//! | `Mailbox.Close()` | [`close()`](crate::Mailbox::close), or drop it | [`close_with(reason)`](crate::Mailbox::close_with) gives watchers a reason |
//! | `Mailbox.MessageCount()` | [`message_count()`](crate::Mailbox::message_count) | |
//! | `Names.Register(name, addr)` | [`register(name, &addr)`](reign_proto::Node::register) | returns a [`RegistryError`](crate::RegistryError) (a closed or foreign mailbox) |
//! | `Names.Unregister(name, addr)` | [`unregister(name, &addr)`](reign_proto::Node::unregister) | |
//! | `Names.Lookup(name)` | [`lookup(name)`](reign_proto::Node::lookup) → `Option<Address>` | prefers a local claimant, balances across remote ones |
//! | `Names.LookupAll(name)` | [`lookup_all(name)`](reign_proto::Node::lookup_all) | |
//! | `Names.SeenNames(names...)` | [`seen_names(&[..])`](reign_proto::Node::seen_names) | |
//! | `Names.Sync()` | [`sync().await`](reign_proto::Node::sync) | a future instead of a blocking call |
//! | `Names.MultipleClaimCount()` | [`multiple_claim_count()`](reign_proto::Node::multiple_claim_count) | claimants get a [`MultipleClaim`](crate::MultipleClaim) message, as in Go reign |
//! | `Names.MessageCount()` | [`stats()`](reign_proto::Node::stats) | every counter of the node, drops included |
//! | `Names.GetDebugger()` (`DumpClaims`, `DumpJSON`, `AllNames`) | [`registry_dump()`](reign_proto::Node::registry_dump), [`dump_json()`](reign_proto::Node::dump_json), [`registry_view()`](reign_proto::Node::registry_view) | also served over HTTP by the admin endpoint (feature `admin`) |
//! | `ClusterSpec`, `NodeDefinition` | [`ClusterSpec`](crate::ClusterSpec), [`NodeDescriptor`](reign_proto::NodeDescriptor) | same field names; `permitted_protocols` lists ALPN names, not cipher suites (rustls picks among secure suites only), and a `tuning` object sets timers and limits |
//! | `NodeID` (a byte) | [`NodeId`](crate::NodeId) (`u16`) | more nodes |
//! | `ClusterLogger`, `StdLogger`, `NullLogger`, `WrapLogger` | `tracing` | install any `tracing` subscriber; the levels follow one policy (a quiet log is a healthy cluster) |
//! | `DeadlineInterval` | [`Tuning::read_deadline`](crate::Tuning) | per spec, not a package variable |
//! | (nothing) | [`spawn`](reign_driver::Reign::spawn), [`Mailbox::link`](crate::Mailbox::link), [`supervise`](reign_driver::Reign::supervise), `request`, `broadcast`, `publish`, `tunnel` | tasks tied to mailboxes, links, supervisors and the four messaging schemes are additions |
//!
//! ## The same program, in Rust
//!
//! A mailbox, a registered name, a message there and a close notice back,
//! on a node with no network (`NoClustering`): the calls are the same on a
//! node started from a spec.
//!
//! ```
//! use std::time::Duration;
//! use reign_tokio::{ExitReason, MailboxClosed, MailboxExt, Node};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Ping(u32);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! reign_tokio::register_type_named::<Ping>("guide.goreign.Ping")?; // RegisterType
//! let node = Node::local(); // NoClustering
//!
//! let (addr, mailbox) = node.new_mailbox(); // NewMailbox
//! node.register("pinger", &addr)?; // Names.Register
//! node.sync().await; // Names.Sync
//!
//! let found = node.lookup("pinger").expect("registered"); // Names.Lookup
//! found.send(Ping(1))?; // Address.Send
//! let msg = mailbox.recv_timeout(Duration::from_secs(1)).await?; // Mailbox.Receive
//! assert_eq!(msg.downcast::<Ping>().unwrap(), Ping(1));
//!
//! let (watcher, notes) = node.new_mailbox();
//! found.on_close_notify(&watcher); // Address.OnCloseNotify
//! mailbox.close(); // Mailbox.Close
//! let note: MailboxClosed = notes.recv_type().await?;
//! assert_eq!((note.id, note.reason), (addr.id(), ExitReason::Closed));
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
