//! Connections coming and going: the handshake's end, failures, peers
//! going down, redials and timers; and counting the messages an outbound
//! queue held when it is dropped.
//!
//! **Simultaneous dials.** Two nodes may dial each other at the same time
//! (a restart, a partition healing). The lower id is the preferred dialer
//! ([`dial_grace`] makes the other wait before dialling at all), and both
//! ends must keep the same connection without either reporting the other
//! down, since that would forget its names and drop what was queued for
//! it. So the preferred dialer refuses an inbound connection from the peer
//! while its own dial to that peer is on its way or up, with a `Duplicate`
//! goodbye in place of its hello: the other end never counts that
//! connection up (it is up only once the acceptor's hello arrives) and
//! takes the goodbye as a quiet dial failure. The other end accepts the
//! preferred connection whenever it comes. A dial of the preferred node
//! that never completes (a one-way reachable network) delays the other
//! end's dials by at most its handshake timeout each time; they get in
//! while it waits out its backoff (with a 2 s handshake timeout and a
//! 500 ms backoff cap, linked within 10.5 s at worst over 50 seeds:
//! `tests/core.rs`, `a_preferred_dialer_whose_dials_hang_…`). Refusing
//! only once the own dial's TCP connect completed would link such a
//! network at once, but closing a dial whose connect may just have
//! completed shows the peer a connection that sent nothing, which its
//! outside-input summary counts; not done. `tests/core.rs`
//! (`simultaneous_dials_…`) draws 500 interleavings of the race itself.

use super::*;

use crate::node::outbox::OutboxState;

/// The user messages (sends, requests, replies, publications; not tunnel
/// or control frames) waiting in an outbound queue: what is lost if it is
/// dropped now. Walks the frame headers of the small chunks (a frame never
/// spans two) and counts each large message once, even half sent.
pub(crate) fn queued_messages(state: &OutboxState) -> u64 {
    use crate::codec::frame::{FrameKind, LEN_PREFIX};
    let mut count = 0u64;
    for chunk in state.small_chunks() {
        let mut at = 0;
        while at + LEN_PREFIX < chunk.len() {
            let mut len = [0u8; LEN_PREFIX];
            len.copy_from_slice(&chunk[at..at + LEN_PREFIX]);
            let kind = chunk[at + LEN_PREFIX];
            if [
                FrameKind::Data,
                FrameKind::Request,
                FrameKind::Reply,
                FrameKind::Publish,
            ]
            .iter()
            .any(|&k| k as u8 == kind)
            {
                count += 1;
            }
            at += LEN_PREFIX + u32::from_le_bytes(len) as usize;
        }
    }
    count
        + state
            .lanes
            .iter()
            .map(|l| l.items.len() as u64)
            .sum::<u64>()
}

impl Core {
    /// Counts `conn` up as the link to the node `hello` names, unless it
    /// loses a simultaneous-dial race (see the module header). `reply` is
    /// an acceptor's own hello: sent only once the connection is kept, so
    /// a refused dialer reads the goodbye instead and never counts it up.
    pub(super) fn establish(
        &mut self,
        now: Instant,
        conn: &mut Conn,
        hello: Hello,
        reply: Option<Hello>,
    ) -> Result<(), CloseReason> {
        let peer_id = hello.node;
        // Settle a held newcomer first, so that replacing the old
        // connection below does not let it in.
        self.refuse_probe_for_live(now, peer_id, hello.incarnation);
        let dialer_of = |c: &Conn| if c.dialed.is_some() { self.me } else { peer_id };
        let preferred_dialer = self.me.min(peer_id);
        let new_preferred = dialer_of(conn) == preferred_dialer;
        let existing = self.peers.get(&peer_id).and_then(|p| p.up);
        let old_preferred = existing
            .and_then(|old| self.conns.get(&old))
            .is_some_and(|old| dialer_of(old) == preferred_dialer);
        // Our own dial to the peer, still on its way. When this node is the
        // preferred dialer, that dial is the connection both ends keep.
        let own_dial = self
            .peers
            .get(&peer_id)
            .and_then(|p| p.dialing)
            .filter(|&d| d != conn.id);
        if !new_preferred && (old_preferred || own_dial.is_some()) {
            // Both ends dialled at once (see "Simultaneous dials" in the
            // module header): the other end's connection is refused here,
            // before either end counts it up, so no peer-down follows.
            tracing::debug!(
                node = self.me.0,
                peer = peer_id.0,
                "closing a duplicate connection"
            );
            let reason = CloseReason::Duplicate;
            conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(
                &reason.to_string(),
            )));
            return Err(reason);
        }
        if let Some(reply) = reply {
            conn.queue_frame(&Frame::Hello(reply.to_frame_body()));
        }
        if let Some(old_id) = existing {
            // The same dialer again (the old link is dead to it), or the
            // preferred connection arriving after the other end's was let
            // in: the old link's peer goes down.
            self.drop_conn(now, old_id, CloseReason::Replaced, true);
        }
        conn.phase = Phase::Up { peer: peer_id };
        if conn.dialed.is_none() {
            conn.span.record("peer", peer_id.0);
        }
        self.inbound.remove(&conn.id);
        conn.next_ping = now + self.tuning.ping_interval;
        conn.ping_outstanding = false;
        conn.ping_failures = 0;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return Err(CloseReason::NotAPeer { node: peer_id });
        };
        peer.up = Some(conn.id);
        if peer.dialing == Some(conn.id) {
            peer.dialing = None;
        }
        peer.retry_at = None;
        peer.backoff.reset();
        peer.incarnation = Some(hello.incarnation);
        let down_since = peer.down_since.take();
        let failed_dials = peer.dial_failures.end().map_or(0, |(n, _)| n);
        peer.hearsay_from = None;
        let node = &self.node.inner;
        if let Some(outbox) = node.network().outbox(peer_id) {
            outbox.lock().connected = true;
            outbox.counters.connects.fetch_add(1, Ordering::Relaxed);
        }
        // Up (or found again after `connection lost`): one INFO.
        tracing::info!(
            node = self.me.0,
            peer = peer_id.0,
            conn = %conn.id,
            peer_incarnation = hello.incarnation.0,
            unreachable_for = down_since.map(|t| tracing::field::debug(now.saturating_duration_since(t))),
            failed_dials,
            "connection established"
        );
        for frame in node.peer_up(peer_id, hello.incarnation, hello.features) {
            frame.encode(&mut conn.control_bytes);
        }
        self.link_up_members(peer_id, conn, hello.features);
        self.outputs.push_back(Output::Event(Event::PeerUp {
            node: peer_id,
            incarnation: hello.incarnation,
        }));
        Ok(())
    }

    /// Closes a connection for a protocol or TLS failure, sending what is
    /// queued (a goodbye or an alert) first.
    pub(super) fn fail_conn(&mut self, now: Instant, id: ConnId, reason: CloseReason) {
        let refusal = self.refusal.take();
        let orderly = reason.is_orderly();
        if self.is_inbound_handshake(id) && !orderly {
            // Outside input: DEBUG and the summary, never a line each.
            let cause = refusal.unwrap_or_else(|| outside::cause_of(&reason));
            self.note_refusal(id, cause, &reason);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            if orderly || (c.dialed.is_none() && c.peer().is_none()) {
                // Logged as a lost connection by `peer_down`, at warn level,
                // or (inbound, not authenticated) counted above.
            } else if c.peer().is_some() {
                tracing::error!(node = self.me.0, conn = %id, from = %c.label, reason = reason.to_string(), "closing connection");
            } else if !reason.is_handshake_refusal() {
                // Needs a human (a certificate, a cluster mix-up), but
                // would repeat at every redial: ERROR when a run of failed
                // dials begins or its kind of failure changes, DEBUG after
                // (counted in the run's summaries by `drop_conn`).
                let text = reason.to_string();
                let repeated = c
                    .dialed
                    .and_then(|p| self.peers.get(&p))
                    .is_some_and(|p| p.dial_failures.repeats(&text));
                if repeated {
                    tracing::debug!(node = self.me.0, conn = %id, to = %c.label, peer = c.dialed.map(|n| n.0), reason = text, "dialled connection failed during the handshake");
                } else {
                    tracing::error!(
                        node = self.me.0,
                        conn = %id,
                        to = %c.label,
                        peer = c.dialed.map(|n| n.0),
                        reason = text,
                        "dialled connection failed during the handshake"
                    );
                }
            }
            c.flush_control();
            send::transmit(&mut self.buffers, &mut self.outputs, id, c);
        }
        self.drop_conn(now, id, reason, true);
    }

    /// Forgets a connection; if it was a peer's link, the peer goes down.
    pub(super) fn drop_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: CloseReason,
        tell_driver: bool,
    ) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.dirty.remove(&id);
        self.inbound.remove(&id);
        self.probes.retain(|_, p| p.conn != id);
        if self.paused.remove(&id) {
            if let Some(outbox) = conn
                .peer()
                .and_then(|p| self.node.inner.network().outbox(p))
            {
                outbox.unread.set_paused(false);
            }
        }
        if tell_driver {
            self.outputs.push_back(Output::Close { conn: id });
        }
        if let Some(peer_id) = conn.peer() {
            self.peer_down(now, peer_id, reason);
        } else if let Some(peer_id) = conn.dialed {
            if let Some(peer) = self.peers.get_mut(&peer_id) {
                if peer.dialing == Some(id) {
                    peer.dialing = None;
                    // A dial refused as a duplicate failed nothing: the
                    // peer's own dial is the one both ends keep.
                    let failed = reason != CloseReason::Duplicate;
                    if failed && peer.up.is_none() && !self.shutting_down {
                        let error = reason.to_string();
                        let (summary, _) = peer.dial_failures.record(now, &error);
                        tracing::debug!(
                            node = self.me.0,
                            peer = peer_id.0,
                            conn = %id,
                            error,
                            "dial failed"
                        );
                        if let Some(s) = summary {
                            tracing::warn!(
                                node = self.me.0,
                                peer = peer_id.0,
                                failing_for = ?s.failing_for,
                                failed_dials = s.total,
                                "peer {} still unreachable after {} s: {} dials failed since the last report ({} in all); last: {}",
                                peer_id.0,
                                s.failing_for.as_secs(),
                                s.since_summary,
                                s.total,
                                s.last_error
                            );
                        }
                    }
                    self.schedule_redial(now, peer_id);
                }
            }
        }
    }

    pub(super) fn peer_down(&mut self, now: Instant, peer_id: NodeId, reason: CloseReason) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.up = None;
        peer.incarnation = None;
        peer.down_since = Some(now);
        let node = &self.node.inner;
        node.forget_peer_claims(peer_id, &mut self.replies);
        if let Some(outbox) = node.network().outbox(peer_id) {
            let dropped = {
                let mut state = outbox.lock();
                state.connected = false;
                let dropped = queued_messages(&state);
                state.clear();
                dropped
            };
            outbox.counters.disconnects.fetch_add(1, Ordering::Relaxed);
            if dropped > 0 {
                // Accepted by `send`, never sent: lost with the link.
                outbox
                    .counters
                    .dropped_unreachable
                    .fetch_add(dropped, Ordering::Relaxed);
                node.counters
                    .dropped_unreachable
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
        self.active.remove(&peer_id);
        // Nothing produced for the peer survives into its next connection.
        self.replies.retain(|(p, _)| *p != peer_id);
        if self.shutting_down && self.drain_until.is_none() {
            tracing::info!(
                node = self.me.0,
                peer = peer_id.0,
                "connection closed for shutdown"
            );
        } else {
            tracing::warn!(
                node = self.me.0,
                peer = peer_id.0,
                reason = reason.to_string(),
                "connection lost"
            );
        }
        node.peer_down(peer_id, &reason);
        self.outputs.push_back(Output::Event(Event::PeerDown {
            node: peer_id,
            reason,
        }));
        self.schedule_redial(now, peer_id);
        self.release_probe(now, peer_id);
    }

    pub(super) fn schedule_redial(&mut self, now: Instant, peer_id: NodeId) {
        if self.shutting_down {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            let addressed = !peer.descriptor.address.is_empty();
            if addressed && peer.up.is_none() && peer.dialing.is_none() {
                let mut delay = peer.backoff.next_delay(&mut self.rng);
                if !peer.dials_first {
                    delay += dial_grace(&self.tuning);
                }
                peer.retry_at = Some(now + delay);
                tracing::debug!(
                    node = self.me.0,
                    peer = peer_id.0,
                    ?delay,
                    "redial scheduled"
                );
            }
        }
    }

    pub(super) fn dial(&mut self, now: Instant, peer_id: NodeId) {
        let id = self.new_conn_id();
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.retry_at = None;
        let mut tls = match self.tls.client(peer_id) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(node = self.me.0, peer = peer_id.0, error = %e, "cannot make a TLS session");
                let delay = peer.backoff.next_delay(&mut self.rng);
                peer.retry_at = Some(now + delay);
                return;
            }
        };
        tls.set_buffer_limit(None);
        peer.dialing = Some(id);
        let address = peer.descriptor.address.clone();
        let local_address = Some(peer.descriptor.local_address.clone()).filter(|a| !a.is_empty());
        let handshake = Handshake::new(
            Role::Dialer { target: peer_id },
            self.me,
            self.incarnation,
            self.tls.cluster_id.clone(),
        );
        let conn = Conn::new(
            id,
            address.clone(),
            rustls::Connection::from(tls).into(),
            handshake,
            self.tuning.max_frame_len,
            Some(peer_id),
            now,
        );
        self.conns.insert(id, conn);
        tracing::debug!(node = self.me.0, peer = peer_id.0, %id, address, "dialling");
        self.outputs.push_back(Output::Connect {
            conn: id,
            node: peer_id,
            address,
            local_address,
        });
    }

    /// Fires every timer whose deadline has come (the rules are in
    /// [`Core::deadline`]; the connections and peers with one due come
    /// from the timer index, in id order, so a wake-up costs what is due,
    /// not a scan of every connection).
    pub(super) fn run_timers(&mut self, now: Instant) {
        if self.is_due(Timer::Requests, now) {
            self.node.inner.expire_requests(now);
        }
        // While this node has paused reading (its own mailboxes are
        // behind), the peer's pongs sit unread in the socket: the
        // silence is ours, not the peer's, so it proves nothing.
        let paused: Vec<ConnId> = self.paused.iter().copied().collect();
        for id in paused {
            if let Some(conn) = self.conns.get_mut(&id) {
                if conn.peer().is_some() {
                    conn.last_recv = now;
                    conn.ping_failures = 0;
                }
            }
        }
        self.sync_timers();
        let mut ids: Vec<ConnId> = self.timers.due(now).filter_map(Timer::conn).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut failures = Vec::new();
        for id in ids {
            for timer in Timer::of_conn(id) {
                if !self.is_due(timer, now) {
                    continue;
                }
                if let Some(reason) = self.fire_conn_timer(timer, now) {
                    failures.push((id, reason));
                    break;
                }
            }
        }
        for (id, reason) in failures {
            let span = self.conn_span(id);
            let _entered = span.enter();
            if let Some(inbound) = self.inbound.get(&id) {
                let cause = if inbound.heard {
                    outside::SLOW
                } else {
                    outside::SILENT
                };
                self.note_refusal(id, cause, &reason);
            } else if let Some(c) = self.conns.get(&id) {
                if c.peer().is_none() {
                    // Something that accepts and never answers (a wrong
                    // port, another service) needs a human, but repeats at
                    // every redial: ERROR when a run of failed dials begins
                    // or its kind changes, DEBUG after (counted in the
                    // run's summaries by `drop_conn`).
                    let text = reason.to_string();
                    let repeated = c
                        .dialed
                        .and_then(|p| self.peers.get(&p))
                        .is_some_and(|p| p.dial_failures.repeats(&text));
                    let to = &c.label;
                    let peer = c.dialed.map(|n| n.0);
                    if repeated {
                        tracing::debug!(node = self.me.0, conn = %id, peer, to = %to, reason = text, "handshake with a dialled peer timed out");
                    } else {
                        tracing::error!(
                            node = self.me.0,
                            conn = %id,
                            peer,
                            to = %to,
                            reason = text,
                            "handshake with a dialled peer timed out"
                        );
                    }
                }
            }
            self.drop_conn(now, id, reason, true);
        }
        if self.shutting_down {
            return;
        }
        if self.is_due(Timer::Gossip, now) {
            self.membership_timers(now);
        }
        self.sync_timers();
        let mut due: Vec<NodeId> = self
            .timers
            .due(now)
            .filter_map(Timer::redial)
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|p| p.up.is_none() && p.dialing.is_none())
            })
            .collect();
        due.sort_unstable();
        for peer in due {
            self.dial(now, peer);
        }
    }

    /// Fires one of a connection's timers; the reason to close it, if the
    /// timer says so.
    fn fire_conn_timer(&mut self, timer: Timer, now: Instant) -> Option<CloseReason> {
        let tuning = &self.tuning;
        match timer {
            Timer::Handshake(_) => Some(CloseReason::HandshakeTimeout(tuning.handshake_timeout)),
            Timer::FirstBytes(_) => {
                Some(CloseReason::FirstBytesTimeout(tuning.first_bytes_timeout))
            }
            Timer::Silence(_) => Some(CloseReason::ReadTimeout(tuning.read_deadline)),
            Timer::Ping(id) => {
                let conn = self.conns.get_mut(&id)?;
                if conn.ping_outstanding && now > conn.last_recv + tuning.ping_interval {
                    conn.ping_failures += 1;
                } else {
                    conn.ping_failures = 0;
                }
                if conn.ping_failures >= tuning.max_ping_failures {
                    return Some(CloseReason::PingsUnanswered(conn.ping_failures));
                }
                // A ping interval is the moment to give back what an idle
                // link does not need; a busy one keeps its buffers.
                conn.release_idle();
                if let Some(outbox) = conn
                    .peer()
                    .and_then(|p| self.node.inner.network().outbox(p))
                {
                    outbox.lock().release_idle();
                }
                conn.ping_nonce = conn.ping_nonce.wrapping_add(1);
                conn.ping_outstanding = true;
                let nonce = conn.ping_nonce;
                conn.ping_sent = Some((nonce, now));
                conn.queue_frame(&Frame::Ping(nonce));
                conn.next_ping = now + tuning.ping_interval;
                self.dirty.insert(id);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{put_publish_header, put_reply_header, put_request_header};
    use crate::codec::frame::{PublishScope, ReplyStatus};
    use crate::node::outbox::Network;

    /// Sends, requests, replies, publications and large messages (even
    /// half sent) count; pings and control frames do not.
    #[test]
    fn queued_messages_counts_user_messages_only() {
        let peer = NodeId(1);
        let network = Network::new([peer], 16 << 20, 16 << 20, 128 << 20);
        let outbox = network.outbox(peer).expect("a member");
        outbox.lock().connected = true;
        assert_eq!(queued_messages(&outbox.lock()), 0);
        let dest = MailboxId {
            node: peer,
            incarnation: Incarnation(1),
            serial: 1,
        };
        let tag = TypeTag(7);
        for len in [0, 1, 100, FRAGMENT_LEN] {
            let mut payload = vec![1u8; len];
            assert!(network
                .push_message(outbox, dest, tag, &mut payload)
                .is_ok());
        }
        let mut large = vec![2u8; FRAGMENT_LEN + 1];
        assert!(network.push_message(outbox, dest, tag, &mut large).is_ok());
        let framed = |f: &Frame| {
            let mut out = Vec::new();
            f.encode(&mut out);
            out
        };
        let others = [
            framed(&Frame::Ping(3)),
            framed(&Frame::Control(Bytes::from_static(b"\x01\x02"))),
            {
                let mut out = Vec::new();
                put_request_header(&mut out, dest, 9, tag, 1_000, 3);
                out.extend_from_slice(b"abc");
                out
            },
            {
                let mut out = Vec::new();
                put_reply_header(&mut out, 9, ReplyStatus::Ok, tag, 0);
                out
            },
            {
                let mut out = Vec::new();
                put_publish_header(&mut out, PublishScope::Topic, tag, "news", 2);
                out.extend_from_slice(b"hi");
                out
            },
        ];
        for frame in &others {
            let pushed = network.push_frame(outbox, frame.len(), false, false, |out| {
                out.extend_from_slice(frame)
            });
            assert!(pushed.is_ok());
        }
        // 4 small sends, 1 large, a request, a reply and a publication.
        assert_eq!(queued_messages(&outbox.lock()), 8);
        // A large message half sent is still one message lost.
        outbox.lock().lanes[0].items[0].sent = FRAGMENT_LEN;
        assert_eq!(queued_messages(&outbox.lock()), 8);
        outbox.lock().clear();
        assert_eq!(queued_messages(&outbox.lock()), 0);
    }
}
