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
use std::time::{Duration, Instant};

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
    /// The driver's inline receive, if it installed one (see
    /// [`WakeSignal::set_inline_receive`]).
    receive: OnceLock<InlineReceive>,
    /// The deadline the sleeping driver will wake at by itself: `None`
    /// while the driver is awake or never said (any new deadline wakes it).
    armed: Mutex<Option<Option<std::time::Instant>>>,
}

/// A driver's inline transmit: run by a user thread that queued output,
/// true when it wrote that output itself (the driver need not wake).
pub type InlineTransmit = Box<dyn Fn() -> bool + Send + Sync>;

/// A driver's inline receive: run by a thread about to wait for a message
/// (an empty mailbox, a request without its reply); true when it fed the
/// core input read from a socket, so what it waits for may be there now.
pub type InlineReceive = Box<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for WakeSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeSignal")
            .field("pending", &self.pending)
            .field("inline", &self.inline.get().is_some())
            .field("receive", &self.receive.get().is_some())
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

    /// Installs the driver's inline receive (once per node; later calls
    /// are ignored). A thread that found nothing to receive and is about
    /// to wait calls it ([`WakeSignal::receive_inline`]); while the driver
    /// sleeps, it reads what the node's most recently active sockets hold
    /// and feeds it to the core in that thread, so a reply that is already
    /// in the socket is received without waking the driver and then the
    /// waiting thread. One party owns the core at a time.
    pub fn set_inline_receive(&self, receive: InlineReceive) {
        let _ = self.receive.set(receive);
    }

    /// A thread found nothing to receive: lets the driver's inline receive
    /// read the sockets from this thread; whether it fed the core anything
    /// (look again before waiting). Call with no lock held.
    pub fn receive_inline(&self) -> bool {
        self.receive.get().is_some_and(|receive| receive())
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

/// Small frames waiting to leave in order: to one destination mailbox, or
/// (the first two lanes of [`OutboxState::small`]) frames without a mailbox
/// and the overflow of mailboxes that found no lane of their own.
#[derive(Default)]
pub(crate) struct SmallLane {
    /// The mailbox whose frames this lane holds (`None`: the shared lanes).
    pub(crate) dest: Option<MailboxId>,
    /// Finished frames in send order, in chunks of at most [`LANE_CHUNK`]
    /// bytes (or one larger frame), so the core takes them without copying.
    pub(crate) chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks`.
    pub(crate) bytes: usize,
}

/// The lane of frames without a destination mailbox: replies,
/// publications, tunnel frames.
const UNKEYED: usize = 0;

/// The lane of mailboxes that found no lane of their own (all
/// [`MAX_LANES`] taken, or this lane not empty yet: a mailbox whose frames
/// may still wait here must not get a lane of its own, which could overtake
/// them).
const OVERFLOW: usize = 1;

/// Lanes of their own for destination mailboxes, per peer. A sender to
/// more mailboxes at once (a broadcast by hand) shares the overflow lane
/// beyond this, as all small frames shared one queue before lanes; the
/// bound keeps a send's lane lookup (a scan) short and the drain's round
/// short.
pub(crate) const MAX_LANES: usize = 32;

/// Bytes the core takes from one lane before it turns to the next: one TLS
/// record's worth of plaintext (16 KiB), so a frame in an idle lane waits
/// behind about one record per busy lane.
pub(crate) const LANE_CHUNK: usize = 16 * 1024;

/// How long a lane's backlog should take to leave at the link's measured
/// drain rate. A sender to that mailbox sees `Full` past it; a request
/// behind its own mailbox's flood waits about this long, and the flood
/// keeps the link busy as long as its sender refills within it (a sender
/// retrying after `Full` yields or sleeps for tens of microseconds).
pub(crate) const LANE_TARGET_DELAY: Duration = Duration::from_millis(5);

/// The least a lane may hold, whatever the rate: one transmit's worth (the
/// core's transmit budget, 256 KiB), so a busy lane always gives a drain a
/// full batch of work and the cost per message stays that of batches.
pub(crate) const LANE_FLOOR: usize = 256 * 1024;

/// The most a lane may hold is the peer's outbound bound divided by this,
/// so at least this many mailboxes fill their lanes before the whole queue
/// is full: one flooded mailbox never locks requests to others out. It is
/// also the bound before the link's rate was measured.
pub(crate) const LANES_PER_BOUND: usize = 4;

/// Bytes past the whole queue's bound that frames to idle mailboxes (an
/// empty lane) may use: a request or a ping to one mailbox is not refused
/// because another mailbox filled the queue. 16 KiB: a few requests at
/// once, and a bound on what the queue holds past its own.
pub(crate) const LANE_RESERVE: usize = 16 * 1024;

/// How long the core measures a backlogged link's drain before it updates
/// the rate: long enough for several writes to the socket, short enough to
/// follow a change of link within a few target delays.
pub(crate) const RATE_SAMPLE: Duration = Duration::from_millis(10);

/// The drain rate of a link, measured while its queue is backlogged (then
/// the core drains as fast as the socket takes bytes, which is the link's
/// rate).
#[derive(Default)]
pub(crate) struct DrainRate {
    /// When the current sample started, and `drained` then.
    mark: Option<(Instant, u64)>,
    /// Bytes drained in all.
    drained: u64,
    /// The last measured rate in bytes per second (`None`: not yet).
    bytes_per_sec: Option<u64>,
    /// That rate times [`LANE_TARGET_DELAY`], at least [`LANE_FLOOR`]
    /// (worked out once per sample, not on every send).
    timed_limit: Option<usize>,
}

/// What waits to go to one peer.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// Whether a connection to the peer is up; sends to a down peer are
    /// dropped (at most once).
    pub(crate) connected: bool,
    /// Lanes of small frames: [`UNKEYED`], [`OVERFLOW`], then one per
    /// destination mailbox with frames waiting (empty lanes are recycled
    /// by the core's drain).
    pub(crate) small: Vec<SmallLane>,
    /// The lane the core's next drain starts at (round-robin).
    pub(crate) next_lane: usize,
    /// Emptied mailbox lanes, for reuse (their chunk queues keep capacity).
    spare_lanes: Vec<SmallLane>,
    /// Emptied chunks, for reuse.
    pub(crate) spare_chunks: Vec<Vec<u8>>,
    /// Large messages (and anything queued behind them to the same mailbox).
    pub(crate) lanes: VecDeque<Lane>,
    /// Bytes in `small`.
    pub(crate) queued_small: usize,
    /// Bytes in `lanes`.
    pub(crate) queued_bulk: usize,
    /// The link's drain rate, which sets each lane's bound.
    pub(crate) rate: DrainRate,
    /// Mailboxes of the peer that said they are busy (over their share of
    /// unread messages): sends to them fail with `Full` until they say
    /// they are ready. At most [`MAX_BUSY_MAILBOXES`].
    busy: Vec<MailboxId>,
    /// Whether the peer is on the ready list already.
    listed: bool,
}

/// Spare chunks an outbox keeps for reuse: a full transmit's worth
/// (256 KiB) of [`LANE_CHUNK`]s.
pub(crate) const SPARE_CHUNKS: usize = 16;

/// The capacity a fresh chunk starts with; it doubles as frames arrive, up
/// to [`LANE_CHUNK`]. A few messages to a peer (most of a large cluster's
/// peers, most of the time) must not reserve a whole chunk each; a busy
/// peer's chunks reach full size once and are reused from then on.
const FIRST_CHUNK: usize = 4 * 1024;

/// Busy mailboxes remembered per peer. A peer naming more (only a
/// misbehaving one would: each stands for a mailbox holding its share of
/// unread bytes) is not remembered past it; sends to those mailboxes go
/// out and the peer drops them at its hard cap.
pub(crate) const MAX_BUSY_MAILBOXES: usize = 4096;

impl OutboxState {
    /// The lane frames to `dest` go into (`None`: the unkeyed lane),
    /// making one if the mailbox has none and may have one (see
    /// [`OVERFLOW`]).
    fn lane_for(&mut self, dest: Option<MailboxId>) -> usize {
        if self.small.len() < 2 {
            self.small.resize_with(2, SmallLane::default);
        }
        let Some(dest) = dest else {
            return UNKEYED;
        };
        // Most sends go to the mailbox of the first lane: look there first.
        if let Some(i) = self.small[2..].iter().position(|l| l.dest == Some(dest)) {
            return i + 2;
        }
        if self.small[OVERFLOW].bytes > 0 || self.small.len() >= MAX_LANES + 2 {
            return OVERFLOW;
        }
        let mut lane = self.spare_lanes.pop().unwrap_or_default();
        lane.dest = Some(dest);
        self.small.push(lane);
        self.small.len() - 1
    }

    /// The chunk of lane `at` new small frames go into: its last one if it
    /// has room for `framed` more bytes, otherwise a fresh one.
    fn tail(&mut self, at: usize, framed: usize) -> &mut Vec<u8> {
        let lane = &mut self.small[at];
        let fits = lane
            .chunks
            .back()
            .is_some_and(|c| c.len() + framed <= LANE_CHUNK || c.is_empty());
        if !fits {
            let chunk = self
                .spare_chunks
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(framed.clamp(FIRST_CHUNK, LANE_CHUNK)));
            lane.chunks.push_back(chunk);
        }
        lane.chunks.back_mut().expect("just ensured")
    }

    /// The most one lane may hold for a queue bounded at `outbound_limit`:
    /// the measured drain rate times [`LANE_TARGET_DELAY`], at least
    /// [`LANE_FLOOR`], at most `outbound_limit / LANES_PER_BOUND` (also the
    /// bound before a rate was measured).
    pub(crate) fn lane_limit(&self, outbound_limit: usize) -> usize {
        let ceiling = outbound_limit / LANES_PER_BOUND;
        self.rate
            .timed_limit
            .map_or(ceiling, |timed| timed.min(ceiling))
    }

    /// Appends a small frame (`framed` bytes, written by `write`) to the
    /// lane of `dest`, within the bounds if `bounded`: the whole queue's
    /// `outbound_limit` (an empty queue always takes one frame; a frame to
    /// an empty lane may use [`LANE_RESERVE`] past it) and, while another
    /// lane waits too, the lane's own ([`OutboxState::lane_limit`]; an
    /// empty lane always takes one frame).
    fn push_small(
        &mut self,
        dest: Option<MailboxId>,
        framed: usize,
        bounded: bool,
        outbound_limit: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Refused> {
        let at = self.lane_for(dest);
        let held = self.small[at].bytes;
        if bounded && self.queued_small > 0 {
            // A frame to an idle mailbox may use the reserve past the bound.
            let reserve = if held == 0 { LANE_RESERVE } else { 0 };
            if self.queued_small + framed > outbound_limit + reserve {
                return Err(Refused::Full);
            }
            // Under contention (another lane waits too), each lane keeps
            // to its bound in time; alone, a mailbox may use the whole
            // queue, as before lanes.
            let contended = self.queued_small > held;
            if contended && held > 0 && held + framed > self.lane_limit(outbound_limit) {
                return Err(Refused::Full);
            }
        }
        let chunk = self.tail(at, framed);
        let before = chunk.len();
        write(chunk);
        let added = chunk.len() - before;
        self.small[at].bytes += added;
        self.queued_small += added;
        Ok(())
    }

    /// Queues one user message to `dest`: in its mailbox's small lane when
    /// it fits one fragment and no large message to the same mailbox waits
    /// (it would overtake it), else in the mailbox's bulk lane, which has
    /// its own budget (`bulk_limit`) so one large message never locks
    /// small messages to other mailboxes out of the queue.
    fn push_data(
        &mut self,
        dest: MailboxId,
        tag: TypeTag,
        payload: impl DataPayload,
        outbound_limit: usize,
        bulk_limit: usize,
    ) -> Result<(), Refused> {
        let len = payload.bytes().len();
        let framed = len + DATA_HEADER_LEN;
        let lane = self.lanes.iter().position(|l| l.dest == dest);
        match lane {
            None if len <= FRAGMENT_LEN => {
                self.push_small(Some(dest), framed, true, outbound_limit, |chunk| {
                    frame::put_data_header(chunk, dest, tag, len);
                    chunk.extend_from_slice(payload.bytes());
                })
            }
            _ => {
                if self.queued_bulk > 0 && self.queued_bulk + framed > bulk_limit {
                    return Err(Refused::Full);
                }
                let bulk = Bulk {
                    tag,
                    payload: payload.into_bytes(),
                    sent: 0,
                };
                match lane {
                    Some(i) => self.lanes[i].items.push_back(bulk),
                    None => self.lanes.push_back(Lane {
                        dest,
                        items: VecDeque::from([bulk]),
                    }),
                }
                self.queued_bulk += framed;
                Ok(())
            }
        }
    }

    /// The small frames waiting, chunk by chunk, lane by lane (frames to
    /// one mailbox in order; a frame never spans two chunks).
    pub(crate) fn small_chunks(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.small.iter().flat_map(|l| l.chunks.iter())
    }

    /// Takes up to `budget` bytes of small frames (at least one chunk if
    /// any waits) into `into`, a chunk from each lane in turn, starting at
    /// the lane after the one the last drain started at; recycles lanes of
    /// mailboxes left empty. Returns the bytes taken.
    pub(crate) fn take_small(&mut self, budget: usize, into: &mut Vec<Vec<u8>>) -> usize {
        let mut taken = 0;
        let lanes = self.small.len();
        if lanes == 0 || self.queued_small == 0 {
            return 0;
        }
        let start = self.next_lane % lanes;
        self.next_lane = start + 1;
        'rounds: while taken < budget {
            let mut any = false;
            for k in 0..lanes {
                let lane = &mut self.small[(start + k) % lanes];
                if let Some(chunk) = lane.chunks.pop_front() {
                    lane.bytes -= chunk.len();
                    taken += chunk.len();
                    into.push(chunk);
                    any = true;
                    if taken >= budget {
                        break 'rounds;
                    }
                }
            }
            if !any {
                break;
            }
        }
        self.queued_small -= taken;
        // Mailbox lanes left empty go back to the spares (their mailbox
        // gets a lane again with its next frame).
        let mut i = 2;
        while i < self.small.len() {
            if self.small[i].bytes == 0 {
                let mut lane = self.small.swap_remove(i);
                lane.dest = None;
                lane.chunks.clear();
                if self.spare_lanes.len() < MAX_LANES {
                    self.spare_lanes.push(lane);
                }
            } else {
                i += 1;
            }
        }
        taken
    }

    /// Records a drain of `bytes` at `now`; `backlogged`: frames still wait
    /// after it, so the link, not the senders, set the pace and the rate
    /// is the link's. A drain that emptied the queue ends the sample.
    pub(crate) fn record_drain(&mut self, now: Instant, bytes: usize, backlogged: bool) {
        let rate = &mut self.rate;
        rate.drained += bytes as u64;
        if !backlogged {
            rate.mark = None;
            return;
        }
        match rate.mark {
            None => rate.mark = Some((now, rate.drained)),
            Some((since, at)) => {
                let elapsed = now.saturating_duration_since(since);
                if elapsed >= RATE_SAMPLE {
                    let sample = ((rate.drained - at) as u128 * 1_000_000
                        / elapsed.as_micros().max(1)) as u64;
                    // Half the old rate and half the new: one odd sample
                    // (a descheduled driver) moves the bound only halfway.
                    let bytes_per_sec = match rate.bytes_per_sec {
                        Some(old) => old / 2 + sample / 2,
                        None => sample,
                    };
                    rate.bytes_per_sec = Some(bytes_per_sec);
                    let timed =
                        u128::from(bytes_per_sec) * LANE_TARGET_DELAY.as_micros() / 1_000_000;
                    rate.timed_limit =
                        Some(usize::try_from(timed).unwrap_or(usize::MAX).max(LANE_FLOOR));
                    rate.mark = Some((now, rate.drained));
                }
            }
        }
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
        self.small = Vec::new();
        self.spare_lanes = Vec::new();
        self.next_lane = 0;
        self.spare_chunks = Vec::new();
        self.lanes = VecDeque::new();
        true
    }

    /// Bytes of memory the queue holds (capacity, used or not).
    pub(crate) fn capacity(&self) -> usize {
        let chunks: usize = self
            .small_chunks()
            .chain(&self.spare_chunks)
            .map(Vec::capacity)
            .sum();
        let queues: usize = self
            .small
            .iter()
            .chain(&self.spare_lanes)
            .map(|l| l.chunks.capacity() * std::mem::size_of::<Vec<u8>>())
            .sum();
        chunks
            + queues
            + (self.small.capacity() + self.spare_lanes.capacity())
                * std::mem::size_of::<SmallLane>()
            + self.lanes.capacity() * std::mem::size_of::<Lane>()
    }

    /// Drops everything queued (the connection went down); returns how many
    /// bytes were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.queued();
        self.small.clear();
        self.spare_lanes.clear();
        self.next_lane = 0;
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
        self.rate.mark = None;
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

/// Memory a delivered message holds besides its payload, charged with it:
/// its slot in the mailbox's queues (`size_of::<Message>()`, 64 bytes)
/// four times over, since a queue's capacity may be twice what it holds
/// and a mailbox has two (the senders' side and the receiver's, swapped
/// whole, so both grow to a backlog's size), plus its frame header, which
/// stays in the receive buffer beside the payload. It was 96, under what
/// queued messages hold: 172 heap bytes per 64-byte message against 162
/// charged, 120 per 1-byte message against 97, so a mailbox at its share
/// held up to a quarter more than the share. `tests/queued_memory.rs`
/// checks that what queued remote messages hold on the heap stays within
/// what they are charged. A mailbox's share of unread bytes
/// ([`Tuning::mailbox_unread_bytes`](crate::Tuning::mailbox_unread_bytes))
/// counts each queued remote message the same way.
pub const MESSAGE_COST: usize =
    4 * std::mem::size_of::<crate::node::message::Message>() + DATA_HEADER_LEN;

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
        let mut state = outbox.lock();
        if !state.connected {
            return Err(Refused::Unreachable);
        }
        if !state.busy.is_empty() && state.busy.contains(&dest) {
            return Err(Refused::Full);
        }
        state.push_data(dest, tag, payload, self.outbound_limit, self.bulk_limit)?;
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
    /// in the lane of frames without a destination mailbox (replies,
    /// publications, tunnel frames). `bounded` applies the outbound bound;
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
        self.push_frame_to(outbox, None, framed, bounded, inline, write)
    }

    /// As [`Network::push_frame`], in the lane of mailbox `dest` if given
    /// (a request: it keeps its place after small sends to the same
    /// mailbox; a large message to it, leaving in fragments from its bulk
    /// lane, may still be overtaken, as before lanes).
    pub(crate) fn push_frame_to(
        &self,
        outbox: &Outbox,
        dest: Option<MailboxId>,
        framed: usize,
        bounded: bool,
        inline: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Refused> {
        let mut state = outbox.lock();
        if !state.connected {
            return Err(Refused::Unreachable);
        }
        state.push_small(dest, framed, bounded, self.outbound_limit, write)?;
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
            let pushed = state.push_data(dest, tag, payload, self.outbound_limit, self.bulk_limit);
            if let Err(why) = pushed {
                refused = Some(why);
                break;
            }
            taken += 1;
        }
        if taken > 0 {
            self.announce(outbox, state, true);
        }
        (taken, refused)
    }
}

/// A user message's encoded payload as [`OutboxState::push_data`] takes
/// it: read in place when copied into a small lane, turned into `Bytes`
/// only when it leaves in fragments.
trait DataPayload {
    /// The payload's bytes.
    fn bytes(&self) -> &[u8];
    /// The payload as `Bytes`, for a bulk lane.
    fn into_bytes(self) -> Bytes;
}

/// The caller's encoding scratch: a large payload is taken out of it whole
/// (no copy); a small one is copied and the scratch keeps its capacity.
impl DataPayload for &mut Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        Bytes::from(std::mem::take(self))
    }
}

/// A raw payload: a large one is queued by reference count, no copy.
impl DataPayload for &Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        self.clone()
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
            held > 0 && held < LANE_CHUNK,
            "{held} bytes for one message"
        );
        // Queued bytes are never given back.
        assert!(!outbox.lock().release_idle());
        assert_eq!(outbox.lock().queued(), 10 + DATA_HEADER_LEN);
        // Drained (as the core drains it): the chunk goes to the spares,
        // and the next idle check gives everything back.
        {
            let mut state = outbox.lock();
            let mut taken = Vec::new();
            assert_eq!(
                state.take_small(usize::MAX, &mut taken),
                10 + DATA_HEADER_LEN
            );
            let mut chunk = taken.pop().expect("one chunk");
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

    fn mailbox(serial: u64) -> MailboxId {
        MailboxId {
            node: NodeId(300),
            incarnation: Incarnation(1),
            serial,
        }
    }

    /// A connected peer's outbox with a whole-queue bound of `limit`.
    fn network(limit: usize) -> Network {
        let network = Network::new([NodeId(300)], limit, 1 << 20, 1 << 20);
        network
            .outbox(NodeId(300))
            .expect("a member")
            .lock()
            .connected = true;
        network
    }

    /// Queues a data message to `dest` whose 9-byte payload names its
    /// sender's stream `who` and its sequence number `seq`.
    fn send(network: &Network, dest: MailboxId, who: u8, seq: u64) -> Result<(), Refused> {
        let outbox = network.outbox(NodeId(300)).expect("a member");
        let mut payload = vec![who];
        payload.extend_from_slice(&seq.to_le_bytes());
        network.push_message(outbox, dest, TypeTag(1), &mut payload)
    }

    /// Queues a request-like frame (prefix and the same 9-byte payload) in
    /// the lane of `dest` (`None`: the unkeyed lane).
    fn frame(network: &Network, dest: Option<MailboxId>, who: u8, seq: u64) -> Result<(), Refused> {
        let outbox = network.outbox(NodeId(300)).expect("a member");
        network.push_frame_to(outbox, dest, 4 + 9, true, false, |out| {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.push(who);
            out.extend_from_slice(&seq.to_le_bytes());
        })
    }

    /// Drains up to `budget` bytes as the core does; the (who, seq) of
    /// each frame taken, in wire order.
    fn drain(network: &Network, budget: usize) -> Vec<(u8, u64)> {
        let outbox = network.outbox(NodeId(300)).expect("a member");
        let mut chunks = Vec::new();
        outbox.lock().take_small(budget, &mut chunks);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut at = 0;
            while at < chunk.len() {
                let len = u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap()) as usize;
                let end = at + 4 + len;
                let tail = &chunk[end - 9..end];
                out.push((tail[0], u64::from_le_bytes(tail[1..].try_into().unwrap())));
                at = end;
            }
        }
        out
    }

    #[test]
    fn a_frame_to_an_idle_mailbox_leaves_in_the_first_round_past_a_flood() {
        let network = network(64 << 20);
        // 2 MiB of 22-byte frames to mailbox A, then one to B and one
        // without a mailbox (a reply).
        let mut flood = 0;
        while network.outbox(NodeId(300)).unwrap().lock().queued_small < 2 << 20 {
            assert!(send(&network, mailbox(1), b'a', flood).is_ok());
            flood += 1;
        }
        assert!(frame(&network, Some(mailbox(2)), b'b', 0).is_ok());
        assert!(frame(&network, None, b'r', 0).is_ok());
        // One transmit's budget: a chunk of each lane in the first round,
        // whichever lane the round starts at.
        let first = drain(&network, 256 * 1024);
        let position = |who| first.iter().position(|f| f.0 == who);
        let (b, r) = (
            position(b'b').expect("b left"),
            position(b'r').expect("r left"),
        );
        let per_chunk = LANE_CHUNK / (DATA_HEADER_LEN + 9);
        assert!(
            b <= per_chunk + 1 && r <= per_chunk + 1,
            "b at {b}, r at {r}"
        );
        // The flood's frames left in order, and the rest follow in order.
        let mut rest = first;
        loop {
            let more = drain(&network, 256 * 1024);
            if more.is_empty() {
                break;
            }
            rest.extend(more);
        }
        let flood_seen: Vec<u64> = rest.iter().filter(|f| f.0 == b'a').map(|f| f.1).collect();
        assert_eq!(flood_seen, (0..flood).collect::<Vec<_>>());
        assert_eq!(network.outbox(NodeId(300)).unwrap().lock().queued_small, 0);
    }

    #[test]
    fn busy_lanes_share_the_link_in_turn() {
        let network = network(64 << 20);
        for seq in 0..20_000 {
            for who in [b'a', b'b', b'c'] {
                assert!(send(&network, mailbox(u64::from(who)), who, seq).is_ok());
            }
        }
        // Over a few drains each lane got within one chunk of the others.
        let mut counts = [0usize; 3];
        for _ in 0..4 {
            for (who, _) in drain(&network, 256 * 1024) {
                counts[usize::from(who - b'a')] += 1;
            }
        }
        // A drain's budget (16 chunks) ends part way through a round; the
        // round's start moves on each drain, so over 4 drains of 3 lanes no
        // lane is more than 2 chunks ahead (3 with frames not filling
        // chunks exactly).
        let per_chunk = LANE_CHUNK / (DATA_HEADER_LEN + 9) + 1;
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 3 * per_chunk, "{counts:?}");
        assert!(*min > 0);
    }

    #[test]
    fn sends_and_requests_to_one_mailbox_keep_their_order() {
        // Interleaved sends and request frames to A, with sends to B and
        // unkeyed frames between them, drained a little as they come.
        let network = network(64 << 20);
        let mut seen = Vec::new();
        for seq in 0..30_000u64 {
            if seq % 7 == 3 {
                assert!(frame(&network, Some(mailbox(1)), b'a', seq).is_ok());
            } else {
                assert!(send(&network, mailbox(1), b'a', seq).is_ok());
            }
            assert!(send(&network, mailbox(2), b'b', seq).is_ok());
            if seq % 5 == 0 {
                assert!(frame(&network, None, b'r', seq).is_ok());
            }
            if seq % 4000 == 0 {
                seen.extend(drain(&network, 64 * 1024));
            }
        }
        loop {
            let more = drain(&network, 64 * 1024);
            if more.is_empty() {
                break;
            }
            seen.extend(more);
        }
        let stream =
            |who| -> Vec<u64> { seen.iter().filter(|f| f.0 == who).map(|f| f.1).collect() };
        assert_eq!(stream(b'a'), (0..30_000).collect::<Vec<_>>());
        assert_eq!(stream(b'b'), (0..30_000).collect::<Vec<_>>());
        assert_eq!(stream(b'r'), (0..30_000).step_by(5).collect::<Vec<_>>());
    }

    #[test]
    fn past_the_lane_count_mailboxes_share_the_overflow_lane_without_overtaking() {
        let network = network(64 << 20);
        // MAX_LANES mailboxes take a lane each; the next ones overflow.
        for m in 0..MAX_LANES as u64 {
            assert!(send(&network, mailbox(100 + m), b'x', m).is_ok());
        }
        assert!(send(&network, mailbox(1), b'a', 0).is_ok());
        assert!(send(&network, mailbox(2), b'b', 0).is_ok());
        let outbox = network.outbox(NodeId(300)).unwrap();
        assert_eq!(outbox.lock().small.len(), MAX_LANES + 2);
        assert_eq!(
            outbox.lock().small[OVERFLOW].bytes,
            2 * (DATA_HEADER_LEN + 9)
        );
        // Drain the first mailbox lane only: it empties and is recycled,
        // the overflow lane still holds A's first frame.
        outbox.lock().next_lane = 2;
        assert_eq!(drain(&network, 1), vec![(b'x', 0)]);
        assert_eq!(
            outbox.lock().small.len(),
            MAX_LANES + 1,
            "the empty lane was recycled"
        );
        let left = outbox.lock().small[OVERFLOW].bytes;
        assert_eq!(left, 2 * (DATA_HEADER_LEN + 9));
        // A lane is free, but A's next frame goes behind its first in the
        // overflow lane, and so does a new mailbox's.
        assert!(send(&network, mailbox(1), b'a', 1).is_ok());
        assert!(send(&network, mailbox(3), b'c', 0).is_ok());
        assert_eq!(
            outbox.lock().small[OVERFLOW].bytes,
            left + 2 * (DATA_HEADER_LEN + 9)
        );
        assert_eq!(outbox.lock().small.len(), MAX_LANES + 1);
        let mut seen = Vec::new();
        loop {
            let more = drain(&network, 1);
            if more.is_empty() {
                break;
            }
            seen.extend(more);
        }
        let a: Vec<u64> = seen.iter().filter(|f| f.0 == b'a').map(|f| f.1).collect();
        assert_eq!(a, vec![0, 1]);
        // With the overflow lane empty, a new mailbox gets a lane again.
        assert_eq!(outbox.lock().small.len(), 2, "every mailbox lane recycled");
        assert!(send(&network, mailbox(4), b'd', 0).is_ok());
        assert_eq!(outbox.lock().small[OVERFLOW].bytes, 0);
        assert_eq!(outbox.lock().small.len(), 3);
    }

    #[test]
    fn a_lane_is_bounded_under_at_and_over_its_limit_and_an_empty_lane_takes_one() {
        let limit = 1 << 20;
        let network = network(limit);
        let outbox = network.outbox(NodeId(300)).unwrap();
        let lane_limit = outbox.lock().lane_limit(limit);
        assert_eq!(
            lane_limit,
            limit / LANES_PER_BOUND,
            "before a rate: the ceiling"
        );
        let framed = DATA_HEADER_LEN + 9;
        // Alone, a mailbox may use the whole queue: the lane bound holds
        // while another lane waits (here C's one frame).
        assert!(send(&network, mailbox(3), b'c', 0).is_ok());
        let fit = lane_limit / framed;
        for seq in 0..fit as u64 {
            assert!(send(&network, mailbox(1), b'a', seq).is_ok());
        }
        let held = outbox.lock().queued_small - framed;
        assert!(held <= lane_limit && held + framed > lane_limit);
        // Over: refused.
        assert!(matches!(
            send(&network, mailbox(1), b'a', 0),
            Err(Refused::Full)
        ));
        // At: a frame that ends exactly at the limit is taken.
        let room = lane_limit - held;
        if room >= 4 {
            let pushed = network.push_frame_to(outbox, Some(mailbox(1)), room, true, false, |o| {
                o.extend_from_slice(&((room - 4) as u32).to_le_bytes());
                o.resize(o.len() + room - 4, 0);
            });
            assert!(pushed.is_ok(), "a frame up to the limit fits");
            assert!(matches!(
                frame(&network, Some(mailbox(1)), b'a', 0),
                Err(Refused::Full)
            ));
        }
        // Another mailbox and the unkeyed lane still have room.
        assert!(send(&network, mailbox(2), b'b', 0).is_ok());
        assert!(frame(&network, None, b'r', 0).is_ok());
        // Fill the whole queue with other mailboxes' lanes, then the
        // reserve with one frame each to idle mailboxes: then even an
        // empty lane is refused, until the queue drains.
        let mut m = 10;
        while send(&network, mailbox(m), b'x', 0).is_ok() {
            while send(&network, mailbox(m), b'x', 1).is_ok() {}
            m += 1;
        }
        let all = outbox.lock().queued_small;
        assert!(all <= limit + LANE_RESERVE, "{all} bytes");
        assert!(all + framed > limit, "{all} bytes: not at the bound");
        assert!(matches!(
            send(&network, mailbox(99), b'z', 0),
            Err(Refused::Full)
        ));
        drain(&network, 256 * 1024);
        assert!(send(&network, mailbox(99), b'z', 0).is_ok());
    }

    #[test]
    fn the_lane_bound_follows_the_measured_drain_rate_between_floor_and_ceiling() {
        let mut state = OutboxState::default();
        let limit = 64 << 20;
        let t0 = Instant::now();
        // Not backlogged: no sample.
        state.record_drain(t0, 1 << 20, false);
        assert_eq!(state.lane_limit(limit), limit / LANES_PER_BOUND);
        // 100 MB/s, backlogged: 5 ms of it is 500 kB.
        state.record_drain(t0, 0, true);
        state.record_drain(t0 + RATE_SAMPLE, 1_000_000, true);
        assert_eq!(state.rate.bytes_per_sec, Some(100_000_000));
        assert_eq!(state.lane_limit(limit), 500_000);
        // A slow link: the floor.
        let mut slow = OutboxState::default();
        slow.record_drain(t0, 0, true);
        slow.record_drain(t0 + Duration::from_secs(1), 1000, true);
        assert_eq!(slow.lane_limit(limit), LANE_FLOOR);
        // A small whole-queue bound wins over the floor.
        assert_eq!(slow.lane_limit(64 * 1024), 16 * 1024);
        // A very fast link: the ceiling.
        let mut fast = OutboxState::default();
        fast.record_drain(t0, 0, true);
        fast.record_drain(t0 + RATE_SAMPLE, 1 << 30, true);
        assert_eq!(fast.lane_limit(limit), limit / LANES_PER_BOUND);
        // Samples average: half old, half new.
        state.record_drain(t0 + 2 * RATE_SAMPLE, 3_000_000, true);
        assert_eq!(state.rate.bytes_per_sec, Some(200_000_000));
    }
}
