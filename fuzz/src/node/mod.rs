//! `node`: a whole [`Core`] driven through its public Sans-IO API.
//!
//! The node is one of a 2- or 3-node cluster whose certificates are made
//! once per process. Its peers reach it over authenticated plaintext links
//! (`Core::fuzz_connect_peer`, fuzz builds only), so arbitrary frames reach
//! every layer above TLS; real inbound connections get garbage where TLS
//! belongs; the driver's reports (written, closed, connected, failed) come
//! in any order; virtual time advances; and local code creates and closes
//! mailboxes, sends to remote mailboxes, registers names, watches remote
//! mailboxes, joins groups, publishes, requests and opens tunnels.
//!
//! After every input the harness drains [`Core::poll_output`] and checks:
//! - nothing panics, and output ends (`poll_output` returns `None`);
//! - memory a peer can make the node hold for its link stays bounded:
//!   [`Core::peer_buffered_bytes`] (partial messages, unsent core frames,
//!   decoder buffer, unwritten transmits) is at most two maximum messages,
//!   one maximum frame, what local calls queued, what the driver has not
//!   reported written, and a little slack;
//! - links the input was not for stay up (only time passing, or input for
//!   a link, may bring a link down);
//! - `PeerUp`/`PeerDown` events alternate per peer and match
//!   [`Core::connected_peers`]; nothing is output for a connection after
//!   its `Close`;
//! - what the node sends its peers is a stream of well-formed frames that
//!   never stops mid-frame at a `Close`, with data only for the peer's own
//!   mailboxes;
//! - a tunnel never buffers more than its credit window plus one message
//!   of `max_message_len` (the message being assembled, credited as it
//!   arrives so that messages larger than the window pass);
//! - after shutdown no connection is left.
//!
//! The target is split by what each part owns:
//! - `grammar.rs`: the input's steps ([`NodeInput`], [`Op`], ...), parsed by
//!   `arbitrary` and written back for seeds, with their byte layout;
//! - `value.rs`: the values of registered types the harness sends;
//! - `wire.rs`: what a step's words stand for (ids, values, frames, control
//!   messages);
//! - `harness.rs`: the node and its surroundings, driven step by step;
//! - `checks.rs`: the checks above.
//!
//! Each can be read alone, and only `grammar.rs` decides how the stored
//! corpora and regressions replay.

mod checks;
mod grammar;
mod harness;
mod value;
mod wire;

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use reign_proto::{Incarnation, NodeId, Tuning};

pub use grammar::{
    Body, Chunk, Corr, Delta, FuzzControl, FuzzFrame, FuzzMember, FuzzReason, FuzzTarget,
    FuzzTunnelOp, FuzzValue, LocalOp, Name, NodeInput, Op, RemoteRef, Tag, TunnelRef, Who,
};
use harness::Harness;

/// The incarnation `fuzz_connect_peer` gives every peer.
const PEER_INCARNATION: Incarnation = Incarnation(1);
/// This node's incarnation.
const MY_INCARNATION: Incarnation = Incarnation(0x5eed);
/// Frame bytes one input may send at once (with repeats).
const MAX_OP_BYTES: usize = 256 * 1024;
/// The registry's per-node caps in the fuzz tuning: small, so that a
/// `Flood` reaches one (under, at and over) with a small input.
const FLOOD_COUNT_CAP: usize = 4;
/// The longest name, group or topic in the fuzz tuning.
const FLOOD_NAME_CAP: usize = 32;
/// Entries one `Flood` sends, at most (keeps its frame under `max_frame_len`).
const FLOOD_MAX_ENTRIES: usize = 16;

/// The node's timers and limits: the fast test timers, small limits so the
/// fuzzer reaches them with small inputs.
pub fn tuning() -> Tuning {
    Tuning {
        max_frame_len: 8 * 1024,
        max_message_len: 160 * 1024,
        outbound_queue_bytes: 64 * 1024,
        outbound_bulk_bytes: 256 * 1024,
        write_window: 16 * 1024,
        max_handshaking: 4,
        tunnel_window: 8 * 1024,
        max_name_len: FLOOD_NAME_CAP,
        max_names_per_node: FLOOD_COUNT_CAP,
        max_group_members_per_node: FLOOD_COUNT_CAP,
        max_topics_per_node: FLOOD_COUNT_CAP,
        ..Tuning::fast()
    }
}

/// Fuzzes a whole node with `data`, a [`NodeInput`].
pub fn node(data: &[u8]) {
    crate::payload::register_harness_types();
    let Ok(input) = NodeInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(&input);
    let trace = std::env::var_os("REIGN_FUZZ_TRACE").is_some();
    for op in &input.ops {
        if trace {
            eprintln!(
                "up {:?}, buffered {:?}, conns {}; next: {op:?}",
                h.up,
                h.peers
                    .iter()
                    .map(|&p| h.core.peer_buffered_bytes(p))
                    .collect::<Vec<_>>(),
                h.core.connection_count()
            );
        }
        let before: BTreeSet<NodeId> = h.up.clone();
        let exempt = h.apply(op);
        h.poll_futures();
        h.drain();
        h.check();
        h.check_links_kept(&before, &exempt, op);
    }
    h.check_shutdown();
}

/// The item `index` picks (modulo their number), if there are any.
pub(super) fn pick<T>(items: &[T], index: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[index as usize % items.len()])
}
