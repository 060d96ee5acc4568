//! The `node` target's checks: what must hold of everything the node
//! outputs and of its state after every step, whatever the input.
//!
//! [`Harness::drain`] takes every [`Output`] and checks it as it comes
//! (connection ids, nothing after a `Close`, `PeerUp`/`PeerDown`
//! alternating); [`Harness::observe`] decodes what the node sends each peer
//! and checks the stream is well formed and addressed to that peer;
//! [`Harness::check`] bounds the memory a peer, the outbound queues, the
//! registry and the tunnels may hold; [`Harness::check_links_kept`] and
//! [`Harness::check_shutdown`] check links stay up unless a step was for
//! them, and that shutdown leaves nothing. The checks are kept apart from
//! the driving so the list of what the target promises (the module header
//! of `node/mod.rs`) has one file to match. `observe` also learns the ids
//! the node used, which `wire.rs` lets the input echo.

use std::collections::BTreeSet;

use reign_proto::codec::Frame;
use reign_proto::control::Control;
use reign_proto::{ConnId, Event, Input, NodeId, Output, Tuning};

use super::grammar::Op;
use super::harness::Harness;
use super::{tuning, MAX_OP_BYTES};

/// Fixed allowance on top of the computed memory bound.
const SLACK: usize = 64 * 1024;
/// Core frames (pongs, answers to control messages) the node lets wait for
/// a peer that does not read before it closes the link (the core's
/// `MAX_CONTROL_BACKLOG`).
const CONTROL_BACKLOG: usize = 8 << 20;
/// Outputs one step may produce before `poll_output` counts as endless.
const MAX_OUTPUTS: usize = 100_000;
/// Request and tunnel ids remembered per peer (the oldest go first).
const MAX_SEEN_IDS: usize = 256;

impl Harness {
    /// Takes every output, checking it.
    pub(super) fn drain(&mut self) {
        let mut count = 0;
        while let Some(output) = self.core.poll_output(self.now) {
            count += 1;
            assert!(count <= MAX_OUTPUTS, "poll_output never returns None");
            match output {
                Output::Connect { conn, node, .. } => {
                    // Spec peers, or members a peer's `Members` message named.
                    assert!(node != self.me, "dialled itself");
                    assert!(!self.conns.contains(&conn), "connection id {conn} reused");
                    self.conns.push(conn);
                }
                Output::Transmit { conn, data } => {
                    assert!(
                        !self.closed.contains(&conn),
                        "transmit on {conn} after its close"
                    );
                    assert!(!data.is_empty(), "an empty transmit");
                    *self.in_flight.entry(conn).or_default() += data.len();
                    self.observe(conn, &data);
                }
                Output::Close { conn } => {
                    assert!(self.closed.insert(conn), "{conn} closed twice");
                    if let Some(stream) = self.streams.remove(&conn) {
                        assert_eq!(stream.buffered(), 0, "{conn} closed amid a frame");
                    }
                    if let Some(peer) = self.link_peer.get(&conn) {
                        if self.links.get(peer) == Some(&conn) {
                            self.links.remove(peer);
                        }
                    }
                }
                Output::PauseReading { conn } | Output::ResumeReading { conn } => {
                    assert!(
                        !self.closed.contains(&conn),
                        "reads paused on closed {conn}"
                    );
                }
                Output::Event(Event::PeerUp { node, .. }) => {
                    assert!(self.up.insert(node), "PeerUp for {node}, which was up");
                }
                Output::Event(Event::PeerDown { node, .. }) => {
                    assert!(self.up.remove(&node), "PeerDown for {node}, which was down");
                }
                Output::Event(Event::IdentityConflict { .. }) => {}
            }
        }
    }

    /// Decodes what the node sent on a plaintext link and learns the ids
    /// a peer may answer to.
    fn observe(&mut self, conn: ConnId, data: &[u8]) {
        let (Some(stream), Some(&peer)) = (self.streams.get_mut(&conn), self.link_peer.get(&conn))
        else {
            return;
        };
        stream.feed(data);
        loop {
            let frame = match stream.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => panic!("the node sent {peer} a malformed frame: {e}"),
            };
            match frame {
                Frame::Data { dest, .. }
                | Frame::FragmentStart { dest, .. }
                | Frame::FragmentCont { dest, .. }
                | Frame::Request { dest, .. } => {
                    assert_eq!(dest.node, peer, "{peer} was sent data for {dest:?}");
                    if let Frame::Request { corr, .. } = frame {
                        push_capped(self.corrs.entry(peer).or_default(), corr);
                    }
                }
                Frame::Tunnel { id, .. } => {
                    let ids = self.tunnel_ids.entry(peer).or_default();
                    if !ids.contains(&id) {
                        push_capped(ids, id);
                    }
                }
                Frame::Ping(nonce) => {
                    self.pings.insert(peer, nonce);
                }
                Frame::Control(body) => match Control::decode(&body) {
                    Ok(Control::SyncRequest { seq }) => {
                        self.syncs.insert(peer, seq);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the node sent {peer} a malformed control body: {e}"),
                },
                Frame::Hello(_) => panic!("the node sent {peer} a hello on an established link"),
                _ => {}
            }
        }
    }

    /// The invariants that hold after every op.
    pub(super) fn check(&mut self) {
        let connected: BTreeSet<NodeId> = self.core.connected_peers().into_iter().collect();
        assert_eq!(connected, self.up, "events and connected_peers disagree");
        let tuning = tuning();
        for &peer in &self.peers {
            let buffered = self.core.peer_buffered_bytes(peer);
            let flight = self
                .links
                .get(&peer)
                .and_then(|c| self.in_flight.get(c))
                .copied()
                .unwrap_or(0);
            // A peer that leaves a write window unread may make the node
            // queue core frames up to the backlog limit, plus one input's
            // worth of answers before the limit is checked.
            let unread = if flight >= tuning.write_window {
                CONTROL_BACKLOG + MAX_OP_BYTES
            } else {
                0
            };
            let bound = 2 * tuning.max_message_len
                + tuning.max_frame_len
                + SLACK
                + self.local_budget
                + flight
                + unread;
            assert!(
                buffered <= bound,
                "the node holds {buffered} bytes for {peer}, over {bound} \
                 ({flight} in flight, {} queued by local calls)",
                self.local_budget
            );
        }
        let stats = self.core.node().peer_stats();
        for s in &stats {
            let bound = tuning.outbound_queue_bytes
                + reign_proto::codec::FRAGMENT_LEN
                + tuning.outbound_bulk_bytes.max(tuning.max_message_len)
                + SLACK
                + self.local_budget;
            assert!(
                s.queued_bytes as usize <= bound,
                "{} bytes wait in the outbound queue to {}, over {bound}",
                s.queued_bytes,
                s.node
            );
        }
        self.check_registry(&tuning);
        for t in &self.tunnels {
            let bound = t.window() + tuning.max_message_len;
            assert!(
                t.buffered_bytes() <= bound,
                "a tunnel buffers {} bytes, over its {} byte window plus one message ({bound})",
                t.buffered_bytes(),
                t.window()
            );
        }
    }

    /// The registry stays within its caps for every peer, and resolves
    /// every contested name to its lowest claimant.
    fn check_registry(&self, tuning: &Tuning) {
        let node = self.core.node();
        for &peer in &self.peers {
            let (names, members, topics) = node.registry_peer_load(peer);
            assert!(
                names <= tuning.max_names_per_node
                    && members <= tuning.max_group_members_per_node
                    && topics <= tuning.max_topics_per_node,
                "{peer} holds {names} names, {members} group memberships and {topics} topics here, over the caps"
            );
        }
        let view = node.registry_view();
        let contested = view.values().filter(|ids| ids.len() > 1).count();
        assert_eq!(node.multiple_claim_count(), contested, "multiple claims");
        for (name, ids) in &view {
            assert!(
                name.len() <= tuning.max_name_len,
                "a name of {} bytes is held",
                name.len()
            );
            assert_eq!(
                node.lookup(name).map(|a| a.id()),
                ids.first().copied(),
                "{name:?} does not resolve to its lowest claimant"
            );
        }
    }

    /// Only the step's own links went down: only time passing, or input
    /// for a link, may take one down (`exempt`, from [`Harness::apply`]).
    pub(super) fn check_links_kept(
        &self,
        before: &BTreeSet<NodeId>,
        exempt: &BTreeSet<NodeId>,
        op: &Op,
    ) {
        if self.shut_down {
            return;
        }
        for peer in before.difference(&self.up) {
            assert!(
                exempt.contains(peer),
                "{op:?} took down the link to {peer}, which it was not for"
            );
        }
    }

    /// Shuts the node down if the input did not, lets the graceful
    /// shutdown run to its deadline, and checks nothing is left.
    pub(super) fn check_shutdown(&mut self) {
        if !self.shut_down {
            self.core.shutdown(self.now);
        }
        self.drain();
        // A graceful shutdown first drains what peers have not taken; at its
        // deadline everything closes.
        if let Some(deadline) = self.core.drain_deadline() {
            self.now = self.now.max(deadline);
            self.core.handle_input(self.now, Input::Timeout);
            self.drain();
        }
        assert_eq!(
            self.core.connection_count(),
            0,
            "connections left after shutdown"
        );
        assert!(self.up.is_empty(), "peers up after shutdown");
    }
}

/// Remembers `id`, forgetting the oldest past [`MAX_SEEN_IDS`].
fn push_capped(ids: &mut Vec<u64>, id: u64) {
    if ids.len() >= MAX_SEEN_IDS {
        ids.remove(0);
    }
    ids.push(id);
}
