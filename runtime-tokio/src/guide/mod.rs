//! Guides for people who know another system: each maps that system's
//! API onto reign's, row by row, says where reign differs and why, and ends
//! with an example that runs (every example here is a doc test).
//!
//! - [`from_go_reign`]: the Go library this one descends from.
//! - [`from_iris`]: the Iris messaging fabric, whose four schemes
//!   (request/reply, broadcast, publish/subscribe, tunnels) reign carries.
//! - [`from_erlang`]: pids, registered and global names, links and
//!   monitors, `pg`, `gen_server` calls and casts.
//! - [`from_nats`]: subjects, request/reply and queue groups.
//! - [`still_foreign`]: what a tokio user may still find foreign.
//!
//! Two habits hold everywhere (see the crate docs of `reign_proto` for the
//! details): **messages are handed over by value, names and addresses are
//! borrowed**; and **messages are dynamic** (any registered type to any
//! address, asked for by type on receipt), with an optional typed layer
//! ([`reign_proto::typed`]: `TypedAddress<T>`, `call`) where one type per
//! conversation is the rule.

pub mod from_erlang;
pub mod from_go_reign;
pub mod from_iris;
pub mod from_nats;
pub mod still_foreign;
