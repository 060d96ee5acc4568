//! The part of the network that user threads touch: one outbound queue per
//! peer, the list of peers with fresh output, and the signal that wakes the
//! driver.
//!
//! A remote send encodes in the caller's thread and appends the finished
//! frame to the peer's queue under that queue's own lock; the core, owned by
//! the driver, later takes everything queued at once and encrypts it into as
//! few TLS records as possible. When the driver is not working and the link
//! is idle, the sending thread may take the core for that moment and write
//! the output itself (the driver's inline transmit, [`WakeSignal::set_inline`]). Large messages wait in per-mailbox lanes and
//! leave in fragments, round-robin with everything else, so they never hold
//! up pings, control traffic or small messages to other mailboxes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use serde::Serialize;

use crate::codec::frame::{self, DATA_HEADER_LEN};
use crate::codec::FRAGMENT_LEN;
use crate::id::{MailboxId, NodeId};
use crate::poison::lock;
use crate::types::TypeTag;

/// Wakes the driver when user threads queue work for the core.
///
/// Runtime-agnostic: the driver polls [`WakeSignal::poll_wait`] from any
/// executor. Notifying an already-notified signal costs one atomic swap, so
/// a burst of sends wakes the driver once.
#[derive(Default)]
pub struct WakeSignal {
    pending: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// The driver's inline transmit, if it installed one (see
    /// [`WakeSignal::set_inline`]).
    inline: OnceLock<InlineTransmit>,
    /// The deadline the sleeping driver will wake at by itself: `None`
    /// while the driver is awake or never said (any new deadline wakes it).
    armed: Mutex<Option<Option<std::time::Instant>>>,
}

/// A driver's inline transmit: run by a user thread that queued output,
/// true when it wrote that output itself (the driver need not wake).
pub type InlineTransmit = Box<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for WakeSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeSignal")
            .field("pending", &self.pending)
            .field("inline", &self.inline.get().is_some())
            .finish()
    }
}

impl WakeSignal {
    /// Installs the driver's inline transmit (once per node; later calls
    /// are ignored). A user thread that queued output and holds no lock
    /// calls it ([`WakeSignal::notify_output`]); it writes the output into
    /// an idle connection's socket in that thread, with the driver's state
    /// taken for the moment, and returns true, or returns false (the driver
    /// is busy, the link is not idle, or something needs the driver) and
    /// the driver is woken as before. One party owns the core at a time.
    pub fn set_inline(&self, transmit: InlineTransmit) {
        let _ = self.inline.set(transmit);
    }

    /// The driver is awake and will read every deadline before it sleeps
    /// again: until [`arm`](WakeSignal::arm), new deadlines wake it.
    pub fn disarm(&self) {
        *lock(&self.armed) = None;
    }

    /// The driver read the deadlines and sleeps until `at` (`None`: no
    /// deadline); a later deadline needs no wake-up.
    pub fn arm(&self, at: Option<std::time::Instant>) {
        *lock(&self.armed) = Some(at);
    }

    /// A deadline at `at` was added for the core's timers: wakes the driver
    /// unless it is armed to wake by itself at or before `at`.
    pub fn notify_deadline(&self, at: std::time::Instant) {
        let covered = matches!(*lock(&self.armed), Some(Some(armed)) if armed <= at);
        if !covered {
            self.notify();
        }
    }

    /// Output was queued by a thread that holds no lock: transmit it inline
    /// when the driver lets this thread, else wake the driver.
    pub fn notify_output(&self) {
        if let Some(transmit) = self.inline.get() {
            if transmit() {
                return;
            }
        }
        self.notify();
    }

    /// Marks work as pending and wakes the driver if it sleeps.
    pub fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let waker = lock(&self.waker).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Ready once work is pending; clears the pending mark.
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        *lock(&self.waker) = Some(cx.waker().clone());
        // A notify between the swap and storing the waker would be lost
        // without this second look.
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Clears and returns the pending mark (for drivers that poll in a loop).
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// A message too large for one frame, leaving in fragments.
pub(crate) struct Bulk {
    pub(crate) tag: TypeTag,
    pub(crate) payload: Bytes,
    /// Bytes of `payload` already framed.
    pub(crate) sent: usize,
}

/// The queued messages to one mailbox that must leave in order behind a
/// large one.
pub(crate) struct Lane {
    pub(crate) dest: MailboxId,
    pub(crate) items: VecDeque<Bulk>,
}

/// What waits to go to one peer.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// Whether a connection to the peer is up; sends to a down peer are
    /// dropped (at most once).
    pub(crate) connected: bool,
    /// Finished small frames, in send order, in chunks of about
    /// [`SMALL_CHUNK`] bytes, so the core can take a transmit's worth at a
    /// time without copying what stays behind.
    pub(crate) small: VecDeque<Vec<u8>>,
    /// Emptied chunks, for reuse.
    pub(crate) spare_chunks: Vec<Vec<u8>>,
    /// Large messages (and anything queued behind them to the same mailbox).
    pub(crate) lanes: VecDeque<Lane>,
    /// Bytes in `small`.
    pub(crate) queued_small: usize,
    /// Bytes in `lanes`.
    pub(crate) queued_bulk: usize,
    /// Mailboxes of the peer that said they are busy (over their share of
    /// unread messages): sends to them fail with `Full` until they say
    /// they are ready. At most [`MAX_BUSY_MAILBOXES`].
    busy: Vec<MailboxId>,
    /// Whether the peer is on the ready list already.
    listed: bool,
}

/// Bytes of small frames per chunk of the outbound queue.
pub(crate) const SMALL_CHUNK: usize = 256 * 1024;

/// The capacity a fresh chunk starts with; it doubles as frames arrive, up
/// to [`SMALL_CHUNK`]. A few messages to a peer (most of a large cluster's
/// peers, most of the time) must not reserve a whole chunk each; a busy
/// peer's chunks reach full size once and are reused from then on.
const FIRST_CHUNK: usize = 4 * 1024;

/// Busy mailboxes remembered per peer. A peer naming more (only a
/// misbehaving one would: each stands for a mailbox holding its share of
/// unread bytes) is not remembered past it; sends to those mailboxes go
/// out and the peer drops them at its hard cap.
pub(crate) const MAX_BUSY_MAILBOXES: usize = 4096;

impl OutboxState {
    /// The chunk new small frames go into: the last one if it has room for
    /// `framed` more bytes, otherwise a fresh one.
    fn tail(&mut self, framed: usize) -> &mut Vec<u8> {
        let fits = self
            .small
            .back()
            .is_some_and(|c| c.len() + framed <= SMALL_CHUNK || c.is_empty());
        if !fits {
            let chunk = self
                .spare_chunks
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(framed.clamp(FIRST_CHUNK, SMALL_CHUNK)));
            self.small.push_back(chunk);
        }
        self.small.back_mut().expect("just ensured")
    }

    /// Bytes waiting in all.
    pub(crate) fn queued(&self) -> usize {
        self.queued_small + self.queued_bulk
    }

    /// Gives the queue's memory back to the allocator if nothing waits in
    /// it (a link gone idle; the core calls this at each ping). Whether
    /// anything was given back.
    pub(crate) fn release_idle(&mut self) -> bool {
        if self.queued() > 0 || self.capacity() == 0 {
            return false;
        }
        self.small = VecDeque::new();
        self.spare_chunks = Vec::new();
        self.lanes = VecDeque::new();
        true
    }

    /// Bytes of memory the queue holds (capacity, used or not).
    pub(crate) fn capacity(&self) -> usize {
        let chunks: usize = self
            .small
            .iter()
            .chain(&self.spare_chunks)
            .map(Vec::capacity)
            .sum();
        chunks
            + self.small.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.lanes.capacity() * std::mem::size_of::<Lane>()
    }

    /// Drops everything queued (the connection went down); returns how many
    /// bytes were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.queued();
        self.small.clear();
        self.spare_chunks.clear();
        self.lanes.clear();
        // A `Ready` sent while the link was down is lost, so a busy mark
        // must not outlive the connection. Sends to a mailbox still busy go
        // out again; its node keeps them up to its hard cap and drops and
        // counts the rest until the mailbox is read (it tells a sender
        // busy once per episode).
        self.busy.clear();
        self.queued_small = 0;
        self.queued_bulk = 0;
        dropped
    }
}

/// Per-peer counters, readable from any thread.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) dropped_unreachable: AtomicU64,
    pub(crate) dropped_full: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    /// The last ping's round trip in microseconds (0: none answered yet).
    pub(crate) rtt_micros: AtomicU64,
}

/// A snapshot of one peer's counters and queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// The peer.
    pub node: NodeId,
    /// Whether a connection to it is up.
    pub connected: bool,
    /// Bytes waiting in the outbound queue.
    pub queued_bytes: u64,
    /// User messages queued for it.
    pub messages_out: u64,
    /// Plaintext bytes sent to it.
    pub bytes_out: u64,
    /// User messages received from it.
    pub messages_in: u64,
    /// Plaintext bytes received from it.
    pub bytes_in: u64,
    /// Sends dropped because it was not connected.
    pub dropped_unreachable: u64,
    /// Sends refused because its queue was full.
    pub dropped_full: u64,
    /// Connections established to it.
    pub connects: u64,
    /// Connections to it lost.
    pub disconnects: u64,
    /// Bytes its messages hold on this node, delivered and not yet received.
    pub unread_bytes: u64,
    /// The round trip of the last answered ping, in microseconds (`None`
    /// until a ping was answered: the first goes `Tuning::ping_interval`
    /// after the connection is up).
    pub rtt_micros: Option<u64>,
}

pub(crate) struct Outbox {
    pub(crate) peer: NodeId,
    /// Whether the peer is a member now (see [`Network::remove_peer`]).
    member: AtomicBool,
    state: Mutex<OutboxState>,
    pub(crate) counters: PeerCounters,
    /// What the peer's messages hold on this node until they are received.
    pub(crate) unread: Arc<RecvBudget>,
}

/// The bytes a peer's messages hold on this node, delivered but not yet
/// received (and dropped) by the application. Past the limit
/// ([`link_pause_bound`]) the core stops reading from that peer's
/// connection — TCP pushes back to the sender, whose outbound queue fills
/// and whose sends return `Full` — and reads again once consumers bring it
/// under half.
///
/// This is the last resort for the node's memory, reached only when many
/// mailboxes fall behind at once: a single slow mailbox is held to its own
/// share ([`Tuning::mailbox_unread_bytes`](crate::Tuning), enforced where
/// messages are queued, see `MailboxShared::push_many`) and one message of
/// the largest size fits under the bound, so neither stops the link.
#[derive(Debug)]
pub(crate) struct RecvBudget {
    used: AtomicUsize,
    limit: AtomicUsize,
    paused: AtomicBool,
    wake: Arc<WakeSignal>,
}

/// The default [`RecvBudget`] limit per peer, until the core sets the one
/// its tuning asks for (see [`link_pause_bound`]).
pub(crate) const DEFAULT_UNREAD_LIMIT: usize = 256 << 20;

/// The [`RecvBudget`] limit in effect for `tuning`: its
/// `max_unread_bytes`, but never below `max_message_len + 2 ×
/// mailbox_unread_bytes`, so that one mailbox at its hard cap plus one
/// message of the largest size never pauses a link (pausing would stop
/// every other mailbox's messages behind one consumer that is slow).
pub(crate) fn link_pause_bound(tuning: &crate::spec::Tuning) -> usize {
    let one_mailbox = tuning
        .mailbox_unread_bytes
        .saturating_mul(crate::mailbox::HARD_CAP_SHARES);
    tuning
        .max_unread_bytes
        .max(tuning.max_message_len.saturating_add(one_mailbox))
}

/// Memory a delivered message holds besides its payload (its queue slot,
/// its share of the receive buffer), charged with it.
pub(crate) const MESSAGE_COST: usize = 96;

impl RecvBudget {
    /// Charges `bytes` until the returned charge drops.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        let bytes = bytes + MESSAGE_COST;
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    pub(crate) fn over(&self) -> bool {
        self.used.load(Ordering::Acquire) > self.limit.load(Ordering::Relaxed)
    }

    fn resume_point(&self) -> usize {
        self.limit.load(Ordering::Relaxed) / 2
    }

    pub(crate) fn can_resume(&self) -> bool {
        self.used.load(Ordering::Acquire) <= self.resume_point()
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// A delivered message's share of its peer's [`RecvBudget`].
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<RecvBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        let after = before.saturating_sub(self.bytes);
        if self.budget.paused.load(Ordering::Acquire) && after <= self.budget.resume_point() {
            // The driver sleeps on this: wake it to resume reading.
            self.budget.wake.notify();
        }
    }
}

/// Why a frame was not queued.
pub(crate) enum Refused {
    Unreachable,
    Full,
}

impl Outbox {
    pub(crate) fn lock(&self) -> MutexGuard<'_, OutboxState> {
        lock(&self.state)
    }

    /// The peer's mailbox `target` is busy (sends to it fail with `Full`)
    /// or ready again.
    pub(crate) fn set_busy(&self, target: MailboxId, busy: bool) {
        let mut state = self.lock();
        let known = state.busy.iter().position(|m| *m == target);
        match (busy, known) {
            (true, None) if state.busy.len() < MAX_BUSY_MAILBOXES => state.busy.push(target),
            (false, Some(i)) => {
                state.busy.swap_remove(i);
            }
            _ => {}
        }
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let (connected, queued) = {
            let state = self.lock();
            (state.connected, state.queued() as u64)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerStats {
            node: self.peer,
            connected,
            queued_bytes: queued,
            messages_out: get(&c.messages_out),
            bytes_out: get(&c.bytes_out),
            messages_in: get(&c.messages_in),
            bytes_in: get(&c.bytes_in),
            dropped_unreachable: get(&c.dropped_unreachable),
            dropped_full: get(&c.dropped_full),
            connects: get(&c.connects),
            disconnects: get(&c.disconnects),
            unread_bytes: self.unread.used() as u64,
            rtt_micros: Some(get(&c.rtt_micros)).filter(|&us| us > 0),
        }
    }
}

/// Node ids per page of the [`Network`]'s outbox table: the high byte of
/// an id picks the page, the low byte the slot.
const PAGE: usize = 256;

type Page = Box<[OnceLock<Box<Outbox>>]>;

/// What the summary of refused tunnel offers counts.
pub(crate) const TUNNELS_REFUSED: &str = "tunnel offers refused";

/// Every peer's outbox.
///
/// Senders find a peer's outbox on every remote send, from any thread, so
/// the lookup takes no lock: outboxes live in a two-level table of
/// write-once slots indexed by node id. Membership can grow while the node
/// runs (joins, spec reloads); an outbox, once made, stays for the life of
/// the node, and a peer that leaves is marked as no longer a member (sends
/// to it are dropped as unreachable, as to any disconnected peer).
pub(crate) struct Network {
    pages: Box<[OnceLock<Page>]>,
    /// Peers whose outbox went from empty to non-empty since the core last looked.
    ready: Mutex<Vec<NodeId>>,
    pub(crate) wake: Arc<WakeSignal>,
    pub(crate) outbound_limit: usize,
    pub(crate) bulk_limit: usize,
    pub(crate) max_message_len: usize,
    /// The credit window of tunnels.
    pub(crate) tunnel_window: usize,
    /// The largest frame a peer accepts.
    pub(crate) max_frame_len: usize,
    /// Bytes each peer's unread messages may hold (new outboxes start here).
    unread_limit: AtomicUsize,
    /// Tunnel offers refused, per cause (summarised by the core's timer).
    pub(crate) tunnels_refused: crate::log_summary::LogSummary,
}

impl Network {
    pub(crate) fn new(
        peers: impl IntoIterator<Item = NodeId>,
        outbound_limit: usize,
        bulk_limit: usize,
        max_message_len: usize,
    ) -> Network {
        let network = Network {
            pages: (0..PAGE).map(|_| OnceLock::new()).collect(),
            ready: Mutex::new(Vec::new()),
            wake: Arc::new(WakeSignal::default()),
            outbound_limit,
            bulk_limit,
            max_message_len,
            tunnel_window: 1 << 20,
            max_frame_len: crate::codec::DEFAULT_MAX_FRAME_LEN,
            unread_limit: AtomicUsize::new(DEFAULT_UNREAD_LIMIT),
            tunnels_refused: crate::log_summary::LogSummary::new(TUNNELS_REFUSED),
        };
        for peer in peers {
            network.add_peer(peer);
        }
        network
    }

    fn slot(&self, peer: NodeId) -> Option<&OnceLock<Box<Outbox>>> {
        let [high, low] = peer.0.to_be_bytes();
        self.pages[usize::from(high)].get()?.get(usize::from(low))
    }

    /// The outbox of a current member, if `peer` is one.
    /// Records the round trip of a ping `peer` answered.
    pub(crate) fn record_rtt(&self, peer: NodeId, rtt: std::time::Duration) {
        if let Some(outbox) = self.outbox(peer) {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            outbox.counters.rtt_micros.store(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn outbox(&self, peer: NodeId) -> Option<&Outbox> {
        self.slot(peer)?
            .get()
            .map(|b| &**b)
            .filter(|o| o.member.load(Ordering::Acquire))
    }

    /// Makes `peer` a member with an outbox (its old one, if it was a
    /// member before: counters carry on).
    pub(crate) fn add_peer(&self, peer: NodeId) {
        let [high, low] = peer.0.to_be_bytes();
        let page = self.pages[usize::from(high)]
            .get_or_init(|| (0..PAGE).map(|_| OnceLock::new()).collect());
        let outbox = page[usize::from(low)].get_or_init(|| {
            Box::new(Outbox {
                peer,
                member: AtomicBool::new(true),
                state: Mutex::new(OutboxState::default()),
                counters: PeerCounters::default(),
                unread: Arc::new(RecvBudget {
                    used: AtomicUsize::new(0),
                    limit: AtomicUsize::new(self.unread_limit.load(Ordering::Relaxed)),
                    paused: AtomicBool::new(false),
                    wake: self.wake.clone(),
                }),
            })
        });
        outbox.member.store(true, Ordering::Release);
    }

    /// `peer` is no longer a member: its outbox is emptied and disappears
    /// from [`outbox`](Network::outbox) and [`outboxes`](Network::outboxes).
    pub(crate) fn remove_peer(&self, peer: NodeId) {
        if let Some(outbox) = self.slot(peer).and_then(|s| s.get()) {
            outbox.member.store(false, Ordering::Release);
            let mut state = outbox.lock();
            state.connected = false;
            state.clear();
        }
    }

    /// Sets how many bytes each peer's unread messages may hold.
    pub(crate) fn set_unread_limit(&self, limit: usize) {
        self.unread_limit.store(limit, Ordering::Relaxed);
        // Former members too: an outbox comes back as it was when its
        // member rejoins.
        let every = self
            .pages
            .iter()
            .filter_map(|page| page.get())
            .flat_map(|page| page.iter().filter_map(|slot| slot.get()));
        for outbox in every {
            outbox.unread.limit.store(limit, Ordering::Relaxed);
        }
    }

    /// Every current member's outbox, in node id order.
    pub(crate) fn outboxes(&self) -> impl Iterator<Item = &Outbox> {
        self.pages
            .iter()
            .filter_map(|page| page.get())
            .flat_map(|page| page.iter().filter_map(|slot| slot.get()))
            .map(|b| &**b)
            .filter(|o| o.member.load(Ordering::Acquire))
    }

    /// Takes the list of peers with fresh output.
    pub(crate) fn take_ready(&self, into: &mut Vec<NodeId>) {
        let mut ready = lock(&self.ready);
        into.append(&mut ready);
    }

    /// Called by the core after it drained a peer's outbox, so the next send
    /// lists the peer again.
    pub(crate) fn unlist(state: &mut OutboxState) {
        state.listed = false;
    }

    /// Queues one encoded user message for `dest`'s node. `payload` is the
    /// caller's encoding scratch; a large payload is taken out of it whole
    /// (no copy) to be fragmented later.
    pub(crate) fn push_message(
        &self,
        outbox: &Outbox,
        dest: MailboxId,
        tag: TypeTag,
        payload: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        let len = payload.len();
        let framed = len + DATA_HEADER_LEN;
        let mut state = outbox.lock();
        if !state.connected {
            return Err(Refused::Unreachable);
        }
        if !state.busy.is_empty() && state.busy.contains(&dest) {
            return Err(Refused::Full);
        }
        let lane = state.lanes.iter_mut().position(|l| l.dest == dest);
        match lane {
            None if len <= FRAGMENT_LEN => {
                if state.queued_small > 0 && state.queued_small + framed > self.outbound_limit {
                    return Err(Refused::Full);
                }
                let chunk = state.tail(framed);
                frame::put_data_header(chunk, dest, tag, len);
                chunk.extend_from_slice(payload);
                state.queued_small += framed;
            }
            _ => {
                // Large messages have their own budget, so one of them never
                // locks small messages to other mailboxes out of the queue.
                if state.queued_bulk > 0 && state.queued_bulk + framed > self.bulk_limit {
                    return Err(Refused::Full);
                }
                let bulk = Bulk {
                    tag,
                    payload: Bytes::from(std::mem::take(payload)),
                    sent: 0,
                };
                match lane {
                    Some(i) => state.lanes[i].items.push_back(bulk),
                    None => state.lanes.push_back(Lane {
                        dest,
                        items: VecDeque::from([bulk]),
                    }),
                }
                state.queued_bulk += framed;
            }
        }
        self.announce(outbox, state, true);
        Ok(())
    }

    /// Lists the peer as having output (once) and wakes the driver, or,
    /// when `inline` (the caller is a user thread holding no lock), lets
    /// the driver's inline transmit write it from this thread.
    fn announce(&self, outbox: &Outbox, mut state: MutexGuard<'_, OutboxState>, inline: bool) {
        let list = !state.listed;
        state.listed = true;
        drop(state);
        if list {
            lock(&self.ready).push(outbox.peer);
            if inline {
                self.wake.notify_output();
            } else {
                self.wake.notify();
            }
        }
    }

    /// Queues a small frame that `write` appends (`framed` bytes long)
    /// among the small messages. `bounded` applies the outbound bound;
    /// tunnel frames skip it, being bounded by their credit windows instead.
    /// `inline`: the caller is a user thread that holds no lock, so the
    /// frame may be transmitted from its thread (see
    /// [`WakeSignal::set_inline`]); the core and callers holding a table's
    /// lock pass false.
    pub(crate) fn push_frame(
        &self,
        outbox: &Outbox,
        framed: usize,
        bounded: bool,
        inline: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Refused> {
        let mut state = outbox.lock();
        if !state.connected {
            return Err(Refused::Unreachable);
        }
        if bounded && state.queued_small > 0 && state.queued_small + framed > self.outbound_limit {
            return Err(Refused::Full);
        }
        let chunk = state.tail(framed);
        let before = chunk.len();
        write(chunk);
        let added = chunk.len() - before;
        state.queued_small += added;
        self.announce(outbox, state, inline);
        Ok(())
    }
}

impl Network {
    /// Queues raw payloads (already their own encoding, see
    /// [`RAW_BYTES_NAME`](crate::message::RAW_BYTES_NAME)) to `dest` in
    /// order, under one lock of the peer's queue and with one announce for
    /// the whole batch. Takes a prefix: how many were queued, and why the
    /// rest were not (the outbound bound, a busy mailbox, a down link).
    /// The caller has checked every length against `max_message_len`.
    /// Small payloads are copied into the queue behind their frame header;
    /// large ones are queued as they are (a reference count, no copy) to
    /// leave in fragments.
    pub(crate) fn push_raw_batch(
        &self,
        outbox: &Outbox,
        dest: MailboxId,
        tag: TypeTag,
        payloads: &[Bytes],
    ) -> (usize, Option<Refused>) {
        let mut state = outbox.lock();
        if !state.connected {
            return (0, Some(Refused::Unreachable));
        }
        if !state.busy.is_empty() && state.busy.contains(&dest) {
            return (0, Some(Refused::Full));
        }
        let mut taken = 0;
        let mut refused = None;
        for payload in payloads {
            let len = payload.len();
            let framed = len + DATA_HEADER_LEN;
            let lane = state.lanes.iter().position(|l| l.dest == dest);
            if lane.is_none() && len <= FRAGMENT_LEN {
                if state.queued_small > 0 && state.queued_small + framed > self.outbound_limit {
                    refused = Some(Refused::Full);
                    break;
                }
                let chunk = state.tail(framed);
                frame::put_data_header(chunk, dest, tag, len);
                chunk.extend_from_slice(payload);
                state.queued_small += framed;
            } else {
                if state.queued_bulk > 0 && state.queued_bulk + framed > self.bulk_limit {
                    refused = Some(Refused::Full);
                    break;
                }
                let bulk = Bulk {
                    tag,
                    payload: payload.clone(),
                    sent: 0,
                };
                match lane {
                    Some(i) => state.lanes[i].items.push_back(bulk),
                    None => state.lanes.push_back(Lane {
                        dest,
                        items: VecDeque::from([bulk]),
                    }),
                }
                state.queued_bulk += framed;
            }
            taken += 1;
        }
        if taken > 0 {
            self.announce(outbox, state, true);
        }
        (taken, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Incarnation;

    fn dest() -> MailboxId {
        MailboxId {
            node: NodeId(300),
            incarnation: Incarnation(1),
            serial: 1,
        }
    }

    #[test]
    fn an_idle_queue_gives_its_memory_back_and_a_waiting_one_keeps_it() {
        let network = Network::new([NodeId(300)], 1 << 20, 1 << 20, 1 << 20);
        let outbox = network.outbox(NodeId(300)).expect("a member");
        outbox.lock().connected = true;
        assert_eq!(outbox.lock().capacity(), 0);
        assert!(!outbox.lock().release_idle(), "nothing to give back");
        // One small message reserves a small chunk, not a whole one.
        let mut payload = vec![1u8; 10];
        assert!(network
            .push_message(outbox, dest(), TypeTag(1), &mut payload)
            .is_ok());
        let held = outbox.lock().capacity();
        assert!(
            held > 0 && held < SMALL_CHUNK,
            "{held} bytes for one message"
        );
        // Queued bytes are never given back.
        assert!(!outbox.lock().release_idle());
        assert_eq!(outbox.lock().queued(), 10 + DATA_HEADER_LEN);
        // Drained (as the core drains it): the chunk goes to the spares,
        // and the next idle check gives everything back.
        {
            let mut state = outbox.lock();
            let mut chunk = state.small.pop_front().expect("one chunk");
            state.queued_small = 0;
            chunk.clear();
            state.spare_chunks.push(chunk);
        }
        assert!(outbox.lock().capacity() > 0);
        assert!(outbox.lock().release_idle());
        assert_eq!(outbox.lock().capacity(), 0);
        // And the queue works as before.
        let mut payload = vec![2u8; 10];
        assert!(network
            .push_message(outbox, dest(), TypeTag(1), &mut payload)
            .is_ok());
        assert_eq!(outbox.lock().queued(), 10 + DATA_HEADER_LEN);
    }

    #[test]
    fn outboxes_of_ids_past_255_are_distinct_and_found() {
        // Ids across pages, the first and last of a page, and the last id.
        let ids = [255u16, 256, 511, 512, 4095, 65_280, u16::MAX];
        let network = Network::new(ids.map(NodeId), 1 << 20, 1 << 20, 1 << 20);
        for id in ids {
            assert_eq!(network.outbox(NodeId(id)).map(|o| o.peer), Some(NodeId(id)));
        }
        assert!(network.outbox(NodeId(257)).is_none());
        assert!(network.outbox(NodeId(0)).is_none());
        let listed: Vec<u16> = network.outboxes().map(|o| o.peer.0).collect();
        assert_eq!(listed, ids.to_vec());
    }
}
