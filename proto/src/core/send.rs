//! Sending: draining outbound queues into TLS, within each connection's
//! write window, small frames first (a chunk from each destination
//! mailbox's lane in turn, see `node/outbox.rs`) and large messages in
//! fragments; each drain is recorded for the link's rate, which bounds the
//! lanes.

use super::*;

use crate::node::outbox::SPARE_CHUNKS;

impl Core {
    pub(super) fn flush(&mut self, now: Instant) {
        if !self.paused.is_empty() {
            self.resume_if_under();
        }
        let network = self.node.network();
        network.take_ready(&mut self.ready_scratch);
        for peer in self.ready_scratch.drain(..) {
            self.active.insert(peer);
        }
        self.send_replies();
        for (peer, frame) in self.node.inner.take_user_control() {
            if let Some(conn_id) = self.peers.get(&peer).and_then(|p| p.up) {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    frame.encode(&mut conn.control_bytes);
                    self.dirty.insert(conn_id);
                }
            }
        }
        let mut active = std::mem::take(&mut self.flush_peers);
        active.extend(self.active.iter().copied());
        for peer in active.drain(..) {
            match self.peers.get(&peer).and_then(|p| p.up) {
                Some(conn) => {
                    self.dirty.insert(conn);
                }
                None => {
                    self.active.remove(&peer);
                }
            }
        }
        self.flush_peers = active;
        let mut dirty = std::mem::take(&mut self.flush_conns);
        dirty.extend(self.dirty.iter().copied());
        self.dirty.clear();
        for id in dirty.drain(..) {
            self.flush_conn(now, id);
        }
        self.flush_conns = dirty;
    }

    /// Encodes the control frames the core's own handlers produced (the
    /// `replies` of the current input) into their peers' connections.
    /// Frames for a peer that is not up are dropped, as `peer_down` drops
    /// what was queued for it.
    pub(super) fn send_replies(&mut self) {
        for (peer, control) in self.replies.drain(..) {
            if let Some(conn_id) = self.peers.get(&peer).and_then(|p| p.up) {
                if let Some(conn) = self.conns.get_mut(&conn_id) {
                    conn.queue_frame(&Frame::Control(control.encode()));
                    self.dirty.insert(conn_id);
                }
            }
        }
    }

    pub(super) fn flush_conn(&mut self, now: Instant, id: ConnId) {
        let window = self.tuning.write_window;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.phase == Phase::Dialing {
            return;
        }
        if conn.in_flight >= window {
            // The driver has not written what it has; it reports Written and
            // the peer becomes active again.
            if conn.control_bytes.len() > MAX_CONTROL_BACKLOG {
                // A peer that keeps asking (pings, syncs) but never reads
                // would grow this without end: it loses its connection.
                let reason = CloseReason::NotReading {
                    waiting: conn.control_bytes.len(),
                };
                self.fail_conn(now, id, reason);
                return;
            }
            if conn.peer().is_none() {
                self.dirty.insert(id);
            }
            return;
        }
        if conn.tls.is_handshaking() {
            conn.in_flight += transmit(&mut self.buffers, &mut self.outputs, id, conn);
            return;
        }
        send_opening_once(conn);
        conn.flush_control();
        if let Some(peer) = conn.peer() {
            let outbox = self.node.inner.network().outbox(peer);
            if let Some(outbox) = outbox {
                let drained = drain_outbox(now, conn, outbox);
                if drained.more {
                    self.active.insert(peer);
                } else {
                    self.active.remove(&peer);
                }
                outbox
                    .counters
                    .bytes_out
                    .fetch_add(drained.bytes as u64, Ordering::Relaxed);
            }
        }
        conn.in_flight += transmit(&mut self.buffers, &mut self.outputs, id, conn);
    }
}

/// Sends the dialer's hello once TLS is up (called from the flush path).
fn send_opening_once(conn: &mut Conn) {
    if conn.phase == Phase::Handshaking && !conn.tls.is_handshaking() && !conn.handshake.is_done() {
        if let Some(hello) = conn.handshake.opening() {
            if !conn.hello_sent {
                conn.queue_frame(&Frame::Hello(hello.to_frame_body()));
                conn.hello_sent = true;
            }
        }
    }
}

struct Drained {
    bytes: usize,
    more: bool,
}

/// Moves queued user frames from a peer's outbox into the TLS session: small
/// frames a chunk from each lane in turn (see `node/outbox.rs`), then, once
/// no small frame waits, fragments of large messages round-robin by
/// mailbox, up to the transmit budget; records the drain for the link's
/// rate, which bounds each lane.
fn drain_outbox(now: Instant, conn: &mut Conn, outbox: &crate::node::outbox::Outbox) -> Drained {
    let mut budget = TRANSMIT_BUDGET;
    let mut written = 0;
    let mut pieces: Vec<(Vec<u8>, Bytes)> = Vec::new();
    let mut chunks = std::mem::take(&mut conn.spare_chunks);
    let more;
    {
        let mut state = outbox.lock();
        // Chunks written last time go back for the senders to reuse.
        for mut chunk in chunks.drain(..) {
            if state.spare_chunks.len() < SPARE_CHUNKS {
                chunk.clear();
                state.spare_chunks.push(chunk);
            }
        }
        // Small frames first, a chunk from each lane in turn, up to the
        // budget.
        budget = budget.saturating_sub(state.take_small(budget, &mut chunks));
        while budget > 0 && state.queued_small == 0 && !state.lanes.is_empty() {
            let mut lane = state.lanes.pop_front().expect("not empty");
            let item = lane.items.front_mut().expect("lanes are never empty");
            let total = item.payload.len();
            let start = item.sent;
            let end = (start + FRAGMENT_LEN).min(total);
            let chunk = item.payload.slice(start..end);
            let mut header = Vec::with_capacity(frame::DATA_HEADER_LEN + 8);
            if start == 0 && end == total {
                frame::put_data_header(&mut header, lane.dest, item.tag, total);
            } else if start == 0 {
                frame::put_fragment_start_header(
                    &mut header,
                    lane.dest,
                    item.tag,
                    total as u64,
                    chunk.len(),
                );
            } else {
                frame::put_fragment_cont_header(&mut header, lane.dest, chunk.len());
            }
            item.sent = end;
            budget = budget.saturating_sub(chunk.len() + header.len());
            if end == total {
                lane.items.pop_front();
                state.queued_bulk -= total + frame::DATA_HEADER_LEN;
            }
            pieces.push((header, chunk));
            if !lane.items.is_empty() {
                state.lanes.push_back(lane);
            }
        }
        more = state.queued() > 0;
        state.record_drain(now, TRANSMIT_BUDGET - budget, more);
        if !more {
            Network::unlist(&mut state);
        }
    }
    for chunk in &chunks {
        conn.write_plaintext(chunk);
        written += chunk.len();
    }
    conn.spare_chunks = chunks;
    for (header, chunk) in pieces {
        conn.write_plaintext(&header);
        conn.write_plaintext(&chunk);
        written += header.len() + chunk.len();
    }
    Drained {
        bytes: written,
        more,
    }
}

/// Moves the TLS records `conn` has ready into an [`Output::Transmit`],
/// written into a recycled buffer (the spare goes back when there is
/// nothing to send); returns the bytes it moved.
pub(super) fn transmit(
    buffers: &mut Vec<Vec<u8>>,
    outputs: &mut VecDeque<Output>,
    id: ConnId,
    conn: &mut Conn,
) -> usize {
    let buf = buffers.pop().unwrap_or_default();
    match conn.take_ciphertext(buf) {
        Ok(data) => {
            let len = data.len();
            outputs.push_back(Output::Transmit { conn: id, data });
            len
        }
        Err(buf) => {
            buffers.push(buf);
            0
        }
    }
}
