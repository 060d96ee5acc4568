//! Iris tunnels over reign tunnels: the two byte-credit windows between a
//! binding and its relay, and the tasks that move chunks between a
//! binding's connection and a reign tunnel.
//!
//! Each Iris chunk crosses the cluster as one reign tunnel message: a
//! varint `sizeOrCont` (the message's total length on its first chunk, 0
//! on the others) followed by the chunk's bytes. The relay never
//! reassembles: the receiving binding does, and discards a partial message
//! when a new first chunk arrives, exactly as it does behind an Iris relay.
//!
//! **Binding → relay.** The relay grants [`TUNNEL_GRANT`] when the tunnel
//! opens (one chunk's worth, [`CHUNK_LIMIT`], once the client has
//! [`FULL_GRANT_TUNNELS`] tunnels open) and grants each chunk's length back
//! once the chunk is handed to the reign tunnel, whose own window holds
//! the sender back when the far end does not read. A chunk beyond the
//! credit granted, or longer than [`CHUNK_LIMIT`], breaks the protocol and
//! the client is dropped: so a tunnel's queued chunks never exceed its
//! grant, and a client's never exceed `FULL_GRANT_TUNNELS × TUNNEL_GRANT +
//! (tunnels − FULL_GRANT_TUNNELS) × CHUNK_LIMIT`.
//!
//! **Relay → binding.** The binding grants its window (64 MiB in iris-go)
//! and re-grants as its application receives. The relay waits for credit
//! only before a message's first chunk; continuation chunks go through
//! (credit may go negative), so a started message always completes, as in
//! Iris. What the relay holds for a client that stops reading is bounded by
//! the outbox's soft cap, not by the credit the binding granted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use reign_proto::poison::lock;
use reign_proto::{IncomingTunnel, TunnelError};

use super::conn::Client;
use super::wire::{Packet, OP_TUN_ALLOW, OP_TUN_CLOSE, OP_TUN_CONFIRM, OP_TUN_TRANSFER};
use crate::runtime::Runtime;
use crate::signal::{race, Either};
use crate::Tunnel;

/// The largest chunk of a tunnel message either way (Iris's relay value):
/// the binding splits messages at the limit the relay gives it.
pub const CHUNK_LIMIT: usize = 64 << 10;

/// The credit the relay grants a binding per tunnel (Iris's
/// `RelayTunnelBuffer`, 4 MiB): chunks in flight from the binding.
pub const TUNNEL_GRANT: usize = 4 << 20;

/// Tunnels of one client that get the whole [`TUNNEL_GRANT`]; further ones
/// get one chunk's worth, so what a client can make the relay hold stays
/// near 64 MiB however many tunnels it opens.
pub const FULL_GRANT_TUNNELS: usize = 16;

/// How long a binding has to confirm a tunnel offered to it (Iris's
/// `RelayTunnelTimeout`): past it the whole connection is dropped.
pub const TUNNEL_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Tunnels one client may have open or opening at once, both directions;
/// each holds a reign tunnel, two tasks and up to its credit in chunks.
/// Past it an open from the binding is answered as timed out at once
/// (Iris's answer to every failed open) and a tunnel offered to the
/// client is rejected; neither is logged (the binding and the opener each
/// get their answer).
pub const MAX_TUNNELS: usize = 1024;

/// What the uplink task forwards, in the order the binding sent it.
pub(crate) enum Up {
    /// One chunk, encoded for the reign tunnel; its payload length.
    Chunk(Vec<u8>, usize),
    /// The binding closed the tunnel.
    Close,
}

/// One open tunnel of a client.
pub(crate) struct Link<R: Runtime> {
    pub(crate) tunnel: Tunnel<R>,
    up: async_channel::Sender<Up>,
    /// Credit granted to the binding and not yet used.
    up_credit: Mutex<usize>,
    /// Credit the binding granted the relay; may go negative.
    down: Mutex<(i64, Option<Waker>)>,
}

/// A tunnel id's state in a client's table.
pub(crate) enum Entry<R: Runtime> {
    /// The binding asked to open it; the open is in progress.
    Opening,
    /// Open both ways.
    Open(Arc<Link<R>>),
}

/// A client's tunnels, by the binding's ids, and the ones offered to it.
pub(crate) struct Tunnels<R: Runtime> {
    pub(crate) live: HashMap<u64, Entry<R>>,
    pub(crate) building: HashMap<u64, IncomingTunnel>,
    next_build: u64,
}

impl<R: Runtime> Default for Tunnels<R> {
    fn default() -> Self {
        Tunnels {
            live: HashMap::new(),
            building: HashMap::new(),
            next_build: 0,
        }
    }
}

impl<R: Runtime> Tunnels<R> {
    /// Keeps an offered tunnel under a fresh build id.
    pub(crate) fn offer(&mut self, incoming: IncomingTunnel) -> u64 {
        let id = self.next_build;
        self.next_build += 1;
        self.building.insert(id, incoming);
        id
    }

    /// Tunnels open or opening, both directions.
    pub(crate) fn count(&self) -> usize {
        self.live.len() + self.building.len()
    }

    /// Whether another tunnel fits.
    pub(crate) fn has_room(&self) -> bool {
        self.count() < MAX_TUNNELS
    }
}

/// The chunk as a reign tunnel message.
fn encode_chunk(size_or_cont: u64, payload: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new(0).varint(size_or_cont).finish();
    packet.remove(0);
    packet.extend_from_slice(payload);
    packet
}

/// Reads a chunk back from a reign tunnel message.
fn decode_chunk(message: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in message.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &message[i + 1..]));
        }
    }
    None
}

impl<R: Runtime> Client<R> {
    /// The binding asked to open tunnel `id` to `cluster`. `false` when
    /// the client has [`MAX_TUNNELS`] tunnels already: the caller refuses
    /// it.
    pub(crate) fn tunnel_init(
        self: &Arc<Self>,
        id: u64,
        cluster: String,
        timeout: Duration,
    ) -> bool {
        {
            let mut tunnels = lock(&self.tunnels);
            if tunnels.live.contains_key(&id) {
                self.kill(format!("tunnel id {id} is already in use"));
                return true;
            }
            if !tunnels.has_room() {
                return false;
            }
            tunnels.live.insert(id, Entry::Opening);
        }
        let client = self.clone();
        self.node.rt.spawn(async move {
            let deadline = std::time::Instant::now() + timeout;
            let opened = race(client.open_with_retry(&cluster, deadline), client.closing())
                .await;
            let Either::Left(result) = opened else {
                return;
            };
            match result {
                Ok(tunnel) => {
                    let still_wanted =
                        matches!(lock(&client.tunnels).live.get(&id), Some(Entry::Opening));
                    if still_wanted {
                        client.push(
                            &Packet::new(OP_TUN_CONFIRM)
                                .varint(id)
                                .bool(false)
                                .varint(CHUNK_LIMIT as u64)
                                .finish(),
                        );
                        client.start_link(id, tunnel);
                    }
                }
                Err(e) => {
                    tracing::debug!(client = client.id, tunnel = id, error = %e, "tunnel open failed");
                    lock(&client.tunnels).live.remove(&id);
                    // Iris reports every construction failure as a timeout.
                    client.push(&Packet::new(OP_TUN_CONFIRM).varint(id).bool(true).finish());
                }
            }
        });
        true
    }

    async fn open_with_retry(
        &self,
        cluster: &str,
        deadline: std::time::Instant,
    ) -> Result<Tunnel<R>, TunnelError> {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TunnelError::Timeout);
            }
            let Some(member) = self.relay.pick_member(&self.node, cluster) else {
                self.node.rt.sleep(left.min(super::NO_MEMBER_RETRY)).await;
                continue;
            };
            match self.node.tunnel(&member, left).await {
                Err(TunnelError::NoMember) => {
                    self.node.rt.sleep(left.min(super::NO_MEMBER_RETRY)).await;
                }
                other => return other,
            }
        }
    }

    /// The binding confirmed offered tunnel `build` as its tunnel `id`.
    pub(crate) fn tunnel_confirm(self: &Arc<Self>, build: u64, id: u64) {
        let incoming = {
            let mut tunnels = lock(&self.tunnels);
            if tunnels.live.contains_key(&id) {
                drop(tunnels);
                self.kill(format!("tunnel id {id} is already in use"));
                return;
            }
            match tunnels.building.remove(&build) {
                Some(incoming) => incoming,
                None => {
                    drop(tunnels);
                    self.kill(format!("confirm of unknown tunnel build {build}"));
                    return;
                }
            }
        };
        match self.node.accept_tunnel(incoming) {
            Ok(tunnel) => self.start_link(id, tunnel),
            Err(e) => {
                // The opener gave up in the meantime: the binding already
                // holds a tunnel, so tell it it is closed.
                let reason = match e {
                    TunnelError::Closed => "tunnel closed".to_owned(),
                    e => e.to_string(),
                };
                self.push(
                    &Packet::new(OP_TUN_CLOSE)
                        .varint(id)
                        .string(&reason)
                        .finish(),
                );
            }
        }
    }

    /// Tunnel `id` is open: grant the binding its credit and start moving
    /// chunks both ways.
    fn start_link(self: &Arc<Self>, id: u64, tunnel: Tunnel<R>) {
        let (up_tx, up_rx) = async_channel::unbounded();
        let grant = {
            let tunnels = lock(&self.tunnels);
            let open = tunnels
                .live
                .values()
                .filter(|e| matches!(e, Entry::Open(_)))
                .count();
            if open < FULL_GRANT_TUNNELS {
                TUNNEL_GRANT
            } else {
                CHUNK_LIMIT
            }
        };
        let link = Arc::new(Link {
            tunnel,
            up: up_tx,
            up_credit: Mutex::new(grant),
            down: Mutex::new((0, None)),
        });
        lock(&self.tunnels)
            .live
            .insert(id, Entry::Open(link.clone()));
        self.push(
            &Packet::new(OP_TUN_ALLOW)
                .varint(id)
                .varint(grant as u64)
                .finish(),
        );
        let client = self.clone();
        let up_link = link.clone();
        self.node.rt.spawn(async move {
            let _ = race(client.uplink(id, &up_link, up_rx), client.closing()).await;
        });
        let client = self.clone();
        self.node.rt.spawn(async move {
            let _ = race(client.downlink(id, &link), client.closing()).await;
        });
    }

    /// Removes tunnel `id` if it is still `link`; whoever removes it tells
    /// the binding (exactly one close notice per tunnel).
    fn remove_link(&self, id: u64, link: &Arc<Link<R>>) -> bool {
        let mut tunnels = lock(&self.tunnels);
        match tunnels.live.get(&id) {
            Some(Entry::Open(l)) if Arc::ptr_eq(l, link) => {
                tunnels.live.remove(&id);
                true
            }
            _ => false,
        }
    }

    async fn uplink(&self, id: u64, link: &Arc<Link<R>>, chunks: async_channel::Receiver<Up>) {
        while let Ok(item) = chunks.recv().await {
            match item {
                Up::Chunk(message, len) => {
                    if link.tunnel.inner().send(message).await.is_err() {
                        // The far end is gone; the downlink reports it.
                        return;
                    }
                    *lock(&link.up_credit) += len;
                    self.push(
                        &Packet::new(OP_TUN_ALLOW)
                            .varint(id)
                            .varint(len as u64)
                            .finish(),
                    );
                }
                Up::Close => {
                    if self.remove_link(id, link) {
                        link.tunnel.close();
                        self.push(&Packet::new(OP_TUN_CLOSE).varint(id).string("").finish());
                    }
                    return;
                }
            }
        }
    }

    async fn downlink(&self, id: u64, link: &Arc<Link<R>>) {
        loop {
            match link.tunnel.inner().recv().await {
                Ok(message) => {
                    let Some((size, payload)) = decode_chunk(&message) else {
                        if self.remove_link(id, link) {
                            link.tunnel.close();
                            self.push(
                                &Packet::new(OP_TUN_CLOSE)
                                    .varint(id)
                                    .string("malformed tunnel chunk from the far end")
                                    .finish(),
                            );
                        }
                        return;
                    };
                    if size != 0 {
                        // Credit is needed for a message's first chunk only.
                        std::future::poll_fn(|cx| {
                            let mut down = lock(&link.down);
                            if down.0 > 0 {
                                Poll::Ready(())
                            } else {
                                down.1 = Some(cx.waker().clone());
                                Poll::Pending
                            }
                        })
                        .await;
                    }
                    lock(&link.down).0 -= payload.len() as i64;
                    if !self.out.room().await {
                        return;
                    }
                    self.push(
                        &Packet::new(OP_TUN_TRANSFER)
                            .varint(id)
                            .varint(size)
                            .binary(payload)
                            .finish(),
                    );
                }
                Err(e) => {
                    if self.remove_link(id, link) {
                        let reason = match e {
                            TunnelError::Closed => String::new(),
                            TunnelError::Remote(reason) => reason,
                            e => e.to_string(),
                        };
                        self.push(
                            &Packet::new(OP_TUN_CLOSE)
                                .varint(id)
                                .string(&reason)
                                .finish(),
                        );
                    }
                    return;
                }
            }
        }
    }

    /// The binding granted `space` bytes on tunnel `id`.
    pub(crate) fn tunnel_allow(&self, id: u64, space: u64) {
        let link = match lock(&self.tunnels).live.get(&id) {
            Some(Entry::Open(link)) => link.clone(),
            _ => return,
        };
        let mut down = lock(&link.down);
        down.0 = down
            .0
            .saturating_add(i64::try_from(space).unwrap_or(i64::MAX));
        if let Some(w) = down.1.take() {
            drop(down);
            w.wake();
        }
    }

    /// A chunk from the binding on tunnel `id`.
    pub(crate) fn tunnel_transfer(&self, id: u64, size_or_cont: u64, payload: &[u8]) {
        let link = match lock(&self.tunnels).live.get(&id) {
            Some(Entry::Open(link)) => link.clone(),
            // Closed meanwhile (the binding may send while its credit
            // lasts) or never opened: nothing to forward to.
            _ => return,
        };
        {
            let mut credit = lock(&link.up_credit);
            if payload.len() > *credit {
                drop(credit);
                self.kill(format!(
                    "tunnel {id}: a chunk of {} bytes beyond the credit granted",
                    payload.len()
                ));
                return;
            }
            *credit -= payload.len();
        }
        let _ = link.up.try_send(Up::Chunk(
            encode_chunk(size_or_cont, payload),
            payload.len(),
        ));
    }

    /// The binding closed tunnel `id`.
    pub(crate) fn tunnel_close(&self, id: u64) {
        let link = match lock(&self.tunnels).live.get(&id) {
            Some(Entry::Open(link)) => link.clone(),
            _ => return,
        };
        let _ = link.up.try_send(Up::Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_through_a_tunnel_message() {
        for size in [0u64, 1, 127, 128, 16 << 20, u64::MAX] {
            let m = encode_chunk(size, b"abc");
            assert_eq!(decode_chunk(&m), Some((size, &b"abc"[..])));
        }
        assert_eq!(decode_chunk(&[0x80; 11]), None);
        assert_eq!(decode_chunk(&[]), None);
    }
}
