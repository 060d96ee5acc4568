//! Taking bytes in: TLS, frames, the handshake, and delivery to mailboxes.

use super::*;

impl Core {
    pub(super) fn on_received(&mut self, now: Instant, id: ConnId, bytes: &[u8]) {
        if !self.inbound.is_empty() {
            self.heard_from(id);
        }
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        conn.last_recv = now;
        let mut failure: Option<CloseReason> = None;
        let result = conn.receive(bytes, |conn| loop {
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(reason) = self.on_frame(now, conn, frame) {
                        failure = Some(reason);
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    failure = Some(CloseReason::MalformedFrame(e.to_string()));
                    return false;
                }
            }
        });
        if let Some(peer) = conn.peer() {
            if let Some(outbox) = self.node.network().outbox(peer) {
                outbox
                    .counters
                    .bytes_in
                    .fetch_add(std::mem::take(&mut conn.plaintext_in), Ordering::Relaxed);
                outbox
                    .counters
                    .messages_in
                    .fetch_add(std::mem::take(&mut self.messages_in), Ordering::Relaxed);
            }
        }
        let failure = match (result, failure) {
            (Err(tls_error), _) => {
                self.refusal = Some(outside::tls_cause(&tls_error));
                Some(CloseReason::Tls(tls_error.to_string()))
            }
            (Ok(()), f) => f,
        };
        self.flush_deliveries();
        self.conns.insert(id, conn);
        self.dirty.insert(id);
        self.pause_if_over(id);
        if let Some(reason) = failure {
            self.fail_conn(now, id, reason);
        }
        // A member that learned of us from others and now leaves for good
        // is forgotten, not redialled; spec members may come back.
        for peer in std::mem::take(&mut self.leaving) {
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.learned && p.up.is_none())
            {
                self.remove_member(now, peer, Removal::LeftCluster);
                self.departed.insert(peer, now + self.tuning.forget_after);
            }
        }
    }

    /// Handles one frame; `Err` closes the connection with that reason.
    pub(super) fn on_frame(
        &mut self,
        now: Instant,
        conn: &mut Conn,
        frame: Frame,
    ) -> Result<(), CloseReason> {
        let Some(peer) = conn.peer() else {
            return self.on_handshake_frame(now, conn, frame);
        };
        if !matches!(
            frame,
            Frame::Data { .. }
                | Frame::FragmentStart { .. }
                | Frame::FragmentCont { .. }
                | Frame::Ping(_)
                | Frame::Pong(_)
        ) {
            // Whatever else the peer sent comes after its earlier messages:
            // deliver those first (a close notice must not overtake them).
            self.flush_deliveries();
        }
        match frame {
            Frame::Ping(nonce) => conn.queue_frame(&Frame::Pong(nonce)),
            Frame::Pong(nonce) => {
                if nonce == conn.ping_nonce {
                    conn.ping_outstanding = false;
                }
                if let Some((_, sent)) = conn.ping_sent.filter(|&(n, _)| n == nonce) {
                    self.node
                        .network()
                        .record_rtt(peer, now.saturating_duration_since(sent));
                }
                if !self.probes.is_empty() {
                    self.on_probe_pong(now, peer, nonce);
                }
            }
            Frame::Data { dest, tag, payload } => {
                if conn.reassembly.contains_key(&dest) {
                    return Err(CloseReason::Protocol(format!(
                        "a whole message to {dest:?} arrived amid its fragments"
                    )));
                }
                self.deliver(peer, dest, tag, payload);
            }
            Frame::FragmentStart {
                dest,
                tag,
                total_len,
                chunk,
            } => {
                if let Some((tag, payload)) = conn.reassemble(
                    dest,
                    Some((tag, total_len)),
                    chunk,
                    self.tuning.max_message_len,
                    self.tuning.max_message_len.saturating_mul(2),
                )? {
                    self.deliver(peer, dest, tag, payload);
                }
            }
            Frame::FragmentCont { dest, chunk } => {
                if let Some((tag, payload)) = conn.reassemble(
                    dest,
                    None,
                    chunk,
                    self.tuning.max_message_len,
                    self.tuning.max_message_len.saturating_mul(2),
                )? {
                    self.deliver(peer, dest, tag, payload);
                }
            }
            Frame::Control(body) => self.on_control(now, peer, conn, body)?,
            Frame::Request {
                dest,
                corr,
                tag,
                remaining_us,
                payload,
            } => {
                let charge = self.charge(peer, payload.len());
                self.node.inner.on_request_frame(
                    now,
                    peer,
                    dest,
                    corr,
                    tag,
                    remaining_us,
                    payload,
                    charge,
                )
            }
            Frame::Reply {
                corr,
                status,
                tag,
                payload,
            } => self
                .node
                .inner
                .on_reply_frame(peer, corr, status, tag, payload),
            Frame::Publish {
                scope,
                tag,
                name,
                payload,
            } => {
                self.charge(peer, 0);
                let budget = self.budget.as_ref().map(|(_, b)| b.clone());
                self.node
                    .inner
                    .on_publish_frame(peer, scope, &name, tag, payload, budget)
            }
            Frame::Tunnel {
                id,
                from_opener,
                op,
            } => self.node.inner.on_tunnel_op(peer, id, from_opener, op),
            Frame::Goodbye(body) => {
                let text: String = crate::codec::payload::decode(&body)
                    .unwrap_or_else(|_| "<unreadable reason>".into());
                let reason = CloseReason::goodbye(text);
                if reason == CloseReason::PeerLeaving {
                    self.leaving.push(peer);
                }
                return Err(reason);
            }
            Frame::Hello(_) => {
                return Err(CloseReason::Protocol("a hello after the handshake".into()))
            }
        }
        Ok(())
    }

    pub(super) fn on_handshake_frame(
        &mut self,
        now: Instant,
        conn: &mut Conn,
        frame: Frame,
    ) -> Result<(), CloseReason> {
        let tls = &conn.tls;
        let step = conn
            .handshake
            .on_frame(frame, |n| self.admits(n), |n| conn::cert_names(tls, n));
        match step {
            Ok(Step::Waiting) => Ok(()),
            Ok(Step::Done { peer, reply }) => {
                let live = self.peers.get(&peer.node).and_then(|p| p.incarnation);
                if live.is_some_and(|live| live != peer.incarnation) {
                    return self.hold_for_probe(conn, peer, reply);
                }
                if !self.peers.contains_key(&peer.node) {
                    let descriptor = NodeDescriptor {
                        id: peer.node.0,
                        address: String::new(),
                        listen_address: String::new(),
                        local_address: String::new(),
                    };
                    self.add_member(now, descriptor, true);
                }
                self.establish(now, conn, peer, reply)
            }
            Err(HandshakeError::RefusedByPeer(reason))
                if conn.dialed.is_some() && reason == crate::close::DUPLICATE_TEXT =>
            {
                // Our dial crossed the peer's, and the peer keeps its own
                // (see "Simultaneous dials" in `lifecycle`): routine.
                tracing::debug!(
                    node = self.me.0,
                    conn = %conn.id,
                    peer = conn.dialed.map(|n| n.0),
                    "dialled connection refused as a duplicate"
                );
                Err(CloseReason::Duplicate)
            }
            Err(e) => {
                if let HandshakeError::RefusedByPeer(reason) = &e {
                    // The peer's goodbye words are all the wire carries;
                    // `ID_IN_USE` opening them is part of the protocol.
                    if reason.starts_with(ID_IN_USE) {
                        tracing::error!(
                            node = self.me.0,
                            by = ?conn.dialed.map(|n| n.0),
                            reason,
                            "another process with this node's id is live in the cluster"
                        );
                        self.outputs
                            .push_back(Output::Event(Event::IdentityConflict {
                                by: conn.dialed.unwrap_or(self.me),
                                reason: reason.clone(),
                            }));
                    }
                }
                if conn.dialed.is_some() {
                    tracing::error!(
                        node = self.me.0,
                        conn = %conn.id,
                        to = %conn.label,
                        peer = conn.dialed.map(|n| n.0),
                        error = %e,
                        "handshake with a dialled peer failed; closing the connection"
                    );
                } else {
                    // Logged at DEBUG and summarised by `fail_conn`.
                    self.refusal = Some(outside::handshake_cause(&e));
                }
                conn.queue_frame(&Frame::Goodbye(handshake::goodbye_body(&e.to_string())));
                Err(CloseReason::Handshake(e))
            }
        }
    }

    pub(super) fn deliver(&mut self, peer: NodeId, dest: MailboxId, tag: TypeTag, payload: Bytes) {
        let node = &self.node.inner;
        self.messages_in += 1;
        if self.last_tag != Some(tag) {
            if !self.known_tags.contains(&tag) {
                if !types::is_registered_tag(tag) {
                    node.counters
                        .dropped_unknown_type
                        .fetch_add(1, Ordering::Relaxed);
                    self.dropped.record(outside::UNKNOWN_TYPE);
                    tracing::debug!(
                        node = self.me.0,
                        from = peer.0,
                        tag = format_args!("{:#018x}", tag.0),
                        "dropping a message of a type not registered on this node"
                    );
                    return;
                }
                self.known_tags.insert(tag);
            }
            self.last_tag = Some(tag);
        }
        // Consecutive messages mostly go to the same mailbox: skip the table.
        let mailbox = match &self.last_dest {
            Some((id, mailbox)) if *id == dest => mailbox.clone(),
            _ => match node.local_mailbox(dest) {
                Some(mailbox) => {
                    self.last_dest = Some((dest, mailbox.clone()));
                    mailbox
                }
                None => {
                    node.counters.dropped_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let weak = node.weak();
        let charge = self.charge(peer, payload.len());
        self.deliveries
            .push((mailbox, Message::remote(tag, payload, weak).charged(charge)));
        if self.deliveries.len() >= DELIVERY_BATCH {
            self.flush_deliveries();
        }
    }

    /// The receive budget of `peer`, charged `bytes` for a new message.
    pub(super) fn charge(
        &mut self,
        peer: NodeId,
        bytes: usize,
    ) -> Option<crate::node::outbox::Charge> {
        if self.budget.as_ref().is_none_or(|(p, _)| *p != peer) {
            let budget = self.node.inner.network().outbox(peer)?.unread.clone();
            self.budget = Some((peer, budget));
        }
        self.budget.as_ref().map(|(_, b)| b.charge(bytes))
    }

    /// Stops reading from `id` while its peer's unread messages are over
    /// budget.
    pub(super) fn pause_if_over(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Some(peer) = conn.peer() else {
            return;
        };
        let Some(outbox) = self.node.inner.network().outbox(peer) else {
            return;
        };
        if outbox.unread.over() && self.paused.insert(id) {
            outbox.unread.set_paused(true);
            tracing::debug!(
                node = self.me.0,
                peer = peer.0,
                unread = outbox.unread.used(),
                "pausing reads"
            );
            self.outputs.push_back(Output::PauseReading { conn: id });
        }
    }

    /// Resumes reading from paused connections whose budget freed up.
    pub(super) fn resume_if_under(&mut self) {
        let paused: Vec<ConnId> = self.paused.iter().copied().collect();
        for id in paused {
            let budget = self
                .conns
                .get(&id)
                .and_then(Conn::peer)
                .and_then(|peer| self.node.inner.network().outbox(peer))
                .map(|o| o.unread.clone());
            match budget {
                Some(budget) if !budget.can_resume() => {}
                Some(budget) => {
                    budget.set_paused(false);
                    self.paused.remove(&id);
                    self.outputs.push_back(Output::ResumeReading { conn: id });
                }
                None => {
                    self.paused.remove(&id);
                }
            }
        }
    }

    /// Pushes the batched deliveries, one lock and one wake-up per run of
    /// messages to the same mailbox, in arrival order.
    pub(super) fn flush_deliveries(&mut self) {
        if self.deliveries.is_empty() {
            return;
        }
        let counters = &self.node.inner.counters;
        // Every delivery was charged to the budget of the peer whose input
        // is being handled.
        let from = self.budget.as_ref().map_or(self.me, |(peer, _)| *peer);
        let share = self.tuning.mailbox_unread_bytes;
        let mut batch = std::mem::take(&mut self.deliveries);
        let mut run = std::mem::take(&mut self.run);
        let mut drain = batch.drain(..).peekable();
        while let Some((mailbox, first)) = drain.next() {
            run.push(first);
            while let Some((_, msg)) = drain.next_if(|(m, _)| Arc::ptr_eq(m, &mailbox)) {
                run.push(msg);
            }
            let pushed = mailbox.push_many(run.drain(..), share, from);
            counters
                .remote_delivered
                .fetch_add(pushed.delivered, Ordering::Relaxed);
            counters
                .dropped_full
                .fetch_add(pushed.full, Ordering::Relaxed);
            counters
                .dropped_closed
                .fetch_add(pushed.closed, Ordering::Relaxed);
            if pushed.over_share > 0 {
                counters
                    .dropped_unread_share
                    .fetch_add(pushed.over_share, Ordering::Relaxed);
            }
            if pushed.tell_busy {
                counters.busy_notices.fetch_add(1, Ordering::Relaxed);
                self.replies
                    .push((from, Control::Busy { target: mailbox.id }));
            }
            if pushed.closed > 0
                && self
                    .last_dest
                    .as_ref()
                    .is_some_and(|(_, m)| Arc::ptr_eq(m, &mailbox))
            {
                self.last_dest = None;
            }
        }
        self.run = run;
        drop(drain);
        self.deliveries = batch;
    }

    pub(super) fn on_control(
        &mut self,
        now: Instant,
        peer: NodeId,
        conn: &mut Conn,
        body: Bytes,
    ) -> Result<(), CloseReason> {
        match Control::decode(&body) {
            Ok(Control::Members { nodes, answer }) => {
                self.on_members(now, peer, conn, nodes, answer);
                Ok(())
            }
            Ok(Control::MemberDigest {
                address,
                count,
                hash,
                answer,
            }) => self.on_member_digest(now, peer, conn, address, (count, hash), answer),
            Ok(Control::Busy { target }) => self.on_busy(peer, target, true),
            Ok(Control::Ready { target }) => self.on_busy(peer, target, false),
            Ok(msg) => {
                // A rejected registry message is ignored and logged at
                // DEBUG by the node; a peer repeating it is summarised here,
                // never one line per message.
                let rejected = &self.node.inner.counters.rejected_claims;
                let before = rejected.load(Ordering::Relaxed);
                let result = self.node.inner.handle_control(peer, msg, &mut self.replies);
                let now_rejected = rejected.load(Ordering::Relaxed);
                if now_rejected > before {
                    self.dropped
                        .record_many(outside::REJECTED_REGISTRY, now_rejected - before);
                }
                result
            }
            Err(e) => Err(CloseReason::MalformedControl(e.to_string())),
        }
    }
}

impl Core {
    /// `peer` says its mailbox `target` is busy (sends to it fail with
    /// `Full` from now on) or ready again.
    fn on_busy(&mut self, peer: NodeId, target: MailboxId, busy: bool) -> Result<(), CloseReason> {
        if target.node != peer {
            return Err(CloseReason::Protocol(format!(
                "reported {target:?}, a mailbox of another node, busy or ready"
            )));
        }
        if let Some(outbox) = self.node.inner.network().outbox(peer) {
            outbox.set_busy(target, busy);
        }
        Ok(())
    }
}
