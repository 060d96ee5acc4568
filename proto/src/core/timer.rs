//! Every timer of the core, the one rule that says when each is due, and
//! the index that keeps the armed ones in time order.
//!
//! A timer is a [`Timer`] value; `Core::deadline` (with `conn_deadline` for
//! a connection's) is its rule. Both sides of the clock read those rules:
//! [`Core::poll_timeout`] takes the earliest deadline of every armed timer
//! that wakes the core, and `Core::run_timers` (core/lifecycle.rs) fires
//! every armed timer whose deadline has come. To add a timer, add a
//! variant, its rule in `deadline`, list it in `Timer::of_conn` or
//! `armed_beyond_conns`, and give it its action in `run_timers` (quinn-proto's `TimerTable` is the model; here
//! the deadlines are computed from the state they follow rather than
//! stored, so no transition can forget to re-arm one).
//!
//! The timers there are one or more of per connection or per peer
//! (handshake, first bytes, silence, ping, redial) sit in a [`TimerIndex`]
//! ordered by deadline, so that neither side of the clock scans every
//! connection: with a full mesh that scan made every wake-up O(N). The index
//! holds only what the rules computed: the core's connection and peer maps
//! are [`Tracked`], which notes every key handed out mutably (or inserted,
//! or removed), and `Core::sync_timers` recomputes the rules of exactly
//! those keys at the end of every input. A transition that changes a
//! deadline has to reach the connection or peer through the map, so it is
//! noted; there is nothing to re-arm by hand. Debug builds (and, sampled,
//! the simulator) check on every `poll_timeout` that the index equals a full
//! scan of the rules, so a state change that escaped the tracking fails
//! loudly in tests. The few global timers (gossip, requests, drain, log
//! summaries) are read from their rules directly.
//!
//! Nothing here takes a lock: the request tables publish their next
//! deadline to the core ([`NodeInner::next_request_deadline`]); the log
//! summaries lock only while events wait to be summarised.
//!
//! [`NodeInner::next_request_deadline`]: crate::node::NodeInner::next_request_deadline

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::conn::{Conn, Phase};
use super::{ConnId, Core};
use crate::id::NodeId;

/// One timer of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// A connection not up yet must finish its handshake within
    /// `Tuning::handshake_timeout` of opening.
    Handshake(ConnId),
    /// An accepted connection must send its first bytes within
    /// `Tuning::first_bytes_timeout`.
    FirstBytes(ConnId),
    /// An up connection must hear from its peer within
    /// `Tuning::read_deadline`.
    Silence(ConnId),
    /// An up connection pings every `Tuning::ping_interval`.
    Ping(ConnId),
    /// A peer that is down is dialled again (its backoff).
    Redial(NodeId),
    /// Gossip to one random peer and forget long-unreachable members, every
    /// `Tuning::gossip_interval`.
    Gossip,
    /// The earliest deadline of a pending or queued request.
    Requests,
    /// The end of a graceful shutdown's drain.
    Drain,
    /// The next rate-limited log summary.
    Summaries,
}

impl Timer {
    /// The timers of one connection, in the order they are checked: the
    /// first that closes the connection ends its checks.
    pub(crate) fn of_conn(id: ConnId) -> [Timer; 4] {
        [
            Timer::Handshake(id),
            Timer::FirstBytes(id),
            Timer::Silence(id),
            Timer::Ping(id),
        ]
    }

    /// The connection this timer belongs to, if it is a connection's.
    pub(crate) fn conn(self) -> Option<ConnId> {
        match self {
            Timer::Handshake(id) | Timer::FirstBytes(id) | Timer::Silence(id) | Timer::Ping(id) => {
                Some(id)
            }
            _ => None,
        }
    }

    /// The peer this timer redials, if it is a redial.
    pub(crate) fn redial(self) -> Option<NodeId> {
        match self {
            Timer::Redial(peer) => Some(peer),
            _ => None,
        }
    }
}

/// A map that notes every key whose value may have changed: each key handed
/// out by [`get_mut`](Tracked::get_mut), inserted or removed, or every key
/// at once after [`values_mut`](Tracked::values_mut). Reading goes through
/// `Deref` to the map; there is no `DerefMut`, so no change can bypass the
/// note. [`Core::sync_timers`] takes the notes and recomputes those keys'
/// timers.
pub(crate) struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    touched: Vec<K>,
    all: bool,
}

impl<K: Ord + Copy, V> Tracked<K, V> {
    pub(crate) fn new() -> Self {
        Tracked {
            map: BTreeMap::new(),
            touched: Vec::new(),
            all: false,
        }
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.touched.push(*key);
        self.map.get_mut(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.touched.push(key);
        self.map.insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.touched.push(*key);
        self.map.remove(key)
    }

    pub(crate) fn values_mut(&mut self) -> std::collections::btree_map::ValuesMut<'_, K, V> {
        self.all = true;
        self.map.values_mut()
    }

    /// Whether changes wait for [`Core::sync_timers`].
    pub(crate) fn pending(&self) -> bool {
        self.all || !self.touched.is_empty()
    }

    /// The keys noted since the last call (`None`: every key may have
    /// changed), leaving `scratch`'s allocation for the next notes.
    fn take_touched(&mut self, mut scratch: Vec<K>) -> Option<Vec<K>> {
        scratch.clear();
        let touched = std::mem::replace(&mut self.touched, scratch);
        if std::mem::take(&mut self.all) {
            None
        } else {
            Some(touched)
        }
    }
}

impl<K, V> std::ops::Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

/// Hashes the index's keys: a timer's kind and a connection or node id,
/// all handed out by this node or its spec, never chosen by a peer, so
/// SipHash's defence against chosen keys buys nothing here. It cost about
/// 4.7 % of a hop's profile samples (`sync_timers` sets four timers per
/// touched connection per input). One multiply-rotate step per word, as
/// FxHash (rustc's own table hasher) does.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    /// FxHash's multiplier: odd, with bits spread over the whole word.
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and its tag from
        // the top seven: fold the high half, where the multiply put the
        // entropy, into the low one.
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

/// The armed connection and redial timers, ordered by deadline, and the
/// peers that make gossip worth a wake-up (up, or learned). Holds what
/// [`Core::sync_timers`] computed from the rules, never a deadline of its
/// own.
#[derive(Debug, Default)]
pub(crate) struct TimerIndex {
    by_time: BTreeSet<(Instant, Timer)>,
    armed: HashMap<Timer, Instant, std::hash::BuildHasherDefault<IdHasher>>,
    awake: BTreeSet<NodeId>,
}

impl TimerIndex {
    /// Arms `timer` at `deadline`, moves it there, or (with `None`)
    /// disarms it.
    pub(crate) fn set(&mut self, timer: Timer, deadline: Option<Instant>) {
        match deadline {
            Some(at) => {
                if let Some(old) = self.armed.insert(timer, at) {
                    if old == at {
                        return;
                    }
                    self.by_time.remove(&(old, timer));
                }
                self.by_time.insert((at, timer));
            }
            None => {
                if let Some(old) = self.armed.remove(&timer) {
                    self.by_time.remove(&(old, timer));
                }
            }
        }
    }

    /// The earliest deadline of every timer held.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// The timers whose deadline has come by `now`, earliest first.
    pub(crate) fn due(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        self.by_time
            .iter()
            .take_while(move |&&(at, _)| at <= now)
            .map(|&(_, timer)| timer)
    }

    /// Where `timer` is armed, if it is.
    #[cfg(test)]
    pub(crate) fn armed(&self, timer: Timer) -> Option<Instant> {
        self.armed.get(&timer).copied()
    }

    /// How many timers are armed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }

    fn set_awake(&mut self, peer: NodeId, awake: bool) {
        if awake {
            self.awake.insert(peer);
        } else {
            self.awake.remove(&peer);
        }
    }

    fn clear(&mut self) {
        self.by_time.clear();
        self.armed.clear();
        self.awake.clear();
    }
}

/// In release builds with the simulator, one `poll_timeout` in this many,
/// or in as many as there are connections if more, checks the index
/// against a full scan (O(N)): every one would make each wake-up O(N) again,
/// the cost the index removes; so the checks cost O(1) per wake-up,
/// amortised. Debug builds check every one.
#[cfg(all(feature = "sim", not(debug_assertions)))]
const SAMPLED_CHECK_EVERY: u32 = 64;

impl Core {
    /// When `timer` is due, if it is armed, and whether reaching that time
    /// needs a wake-up of its own. Gossip with nobody to talk to or forget
    /// does not wake the core, but fires with the next timer that does.
    pub(crate) fn deadline(&self, timer: Timer) -> Option<(Instant, bool)> {
        let wake = |t: Instant| Some((t, true));
        match timer {
            Timer::Handshake(id) | Timer::FirstBytes(id) | Timer::Silence(id) | Timer::Ping(id) => {
                let conn = self.conns.get(&id)?;
                self.conn_deadline(conn, timer).and_then(wake)
            }
            Timer::Redial(peer) => {
                if self.shutting_down {
                    return None;
                }
                self.peers.get(&peer)?.retry_at.and_then(wake)
            }
            Timer::Gossip => {
                if self.shutting_down {
                    return None;
                }
                Some((self.next_gossip, !self.timers.awake.is_empty()))
            }
            Timer::Requests => self.node.inner.next_request_deadline().and_then(wake),
            Timer::Drain => self.drain_until.and_then(wake),
            Timer::Summaries => self.summaries_due().min().and_then(wake),
        }
    }

    /// The rule of a connection's timers.
    pub(crate) fn conn_deadline(&self, conn: &Conn, timer: Timer) -> Option<Instant> {
        let tuning = &self.tuning;
        match (timer, conn.phase) {
            (Timer::Handshake(_), Phase::Dialing | Phase::Handshaking) => {
                Some(conn.opened_at + tuning.handshake_timeout)
            }
            (Timer::FirstBytes(id), Phase::Dialing | Phase::Handshaking) => self
                .inbound
                .get(&id)
                .is_some_and(|i| !i.heard)
                .then(|| conn.opened_at + tuning.first_bytes_timeout),
            (Timer::Silence(_), Phase::Up { .. }) => Some(conn.last_recv + tuning.read_deadline),
            (Timer::Ping(_), Phase::Up { .. }) => Some(conn.next_ping),
            _ => None,
        }
    }

    /// Every timer that is not a connection's.
    pub(crate) fn armed_beyond_conns(&self) -> impl Iterator<Item = Timer> + '_ {
        let peers = self.peers.keys().map(|&peer| Timer::Redial(peer));
        peers.chain([
            Timer::Gossip,
            Timer::Requests,
            Timer::Drain,
            Timer::Summaries,
        ])
    }

    /// Whether `timer` is armed and its deadline has come.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.deadline(timer).is_some_and(|(t, _)| now >= t)
    }

    /// Recomputes the indexed timers of every connection and peer changed
    /// since the last call (all of them after a change to every one).
    /// Called at the end of each input; [`Core::poll_timeout`] scans the
    /// rules instead if a change is still waiting.
    pub(crate) fn sync_timers(&mut self) {
        let conns = self
            .conns
            .take_touched(std::mem::take(&mut self.conn_scratch));
        let peers = self
            .peers
            .take_touched(std::mem::take(&mut self.peer_scratch));
        let (Some(conns), Some(peers)) = (conns, peers) else {
            self.rebuild_timers();
            return;
        };
        for &id in &conns {
            let conn = self.conns.get(&id);
            for timer in Timer::of_conn(id) {
                let at = conn.and_then(|c| self.conn_deadline(c, timer));
                self.timers.set(timer, at);
            }
        }
        for &peer in &peers {
            self.sync_peer(peer);
        }
        self.conn_scratch = conns;
        self.peer_scratch = peers;
    }

    fn sync_peer(&mut self, peer: NodeId) {
        let at = self.deadline(Timer::Redial(peer)).map(|(t, _)| t);
        self.timers.set(Timer::Redial(peer), at);
        let awake = self
            .peers
            .get(&peer)
            .is_some_and(|p| p.up.is_some() || p.learned);
        self.timers.set_awake(peer, awake);
    }

    /// Computes the whole index again from the rules.
    fn rebuild_timers(&mut self) {
        self.timers.clear();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            for timer in Timer::of_conn(id) {
                let at = self.deadline(timer).map(|(t, _)| t);
                self.timers.set(timer, at);
            }
        }
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.sync_peer(peer);
        }
    }

    /// [`Core::poll_timeout`] from the index.
    pub(crate) fn indexed_timeout(&self) -> Option<Instant> {
        let others = [
            Timer::Gossip,
            Timer::Requests,
            Timer::Drain,
            Timer::Summaries,
        ]
        .into_iter()
        .filter_map(|timer| self.deadline(timer))
        .filter_map(|(t, wakes)| wakes.then_some(t));
        others.chain(self.timers.earliest()).min()
    }

    /// [`Core::poll_timeout`] by scanning every timer's rule: the truth the
    /// index is checked against, and the answer while a change waits to be
    /// synced.
    pub(crate) fn scanned_timeout(&self) -> Option<Instant> {
        let conns = self.conns.values().flat_map(|conn| {
            Timer::of_conn(conn.id)
                .into_iter()
                .filter_map(move |timer| self.conn_deadline(conn, timer))
        });
        let someone = self.peers.values().any(|p| p.up.is_some() || p.learned);
        let others = self
            .armed_beyond_conns()
            .filter_map(|timer| {
                let (t, wakes) = self.deadline(timer)?;
                Some((
                    t,
                    if timer == Timer::Gossip {
                        someone
                    } else {
                        wakes
                    },
                ))
            })
            .filter_map(|(t, wakes)| wakes.then_some(t));
        conns.chain(others).min()
    }

    /// Whether this `poll_timeout` checks the index against a full scan.
    pub(crate) fn check_timers_now(&self) -> bool {
        let n = self.timer_checks.get().wrapping_add(1);
        self.timer_checks.set(n);
        #[cfg(debug_assertions)]
        {
            true
        }
        #[cfg(all(feature = "sim", not(debug_assertions)))]
        {
            n.is_multiple_of(SAMPLED_CHECK_EVERY.max(self.conns.len() as u32))
        }
        #[cfg(not(any(feature = "sim", debug_assertions)))]
        {
            false
        }
    }

    /// Panics if the index differs from what the rules say now: a change
    /// of state that escaped [`Tracked`] (or a missed sync).
    pub(crate) fn check_timers(&self) {
        let mut expected = BTreeSet::new();
        for conn in self.conns.values() {
            for timer in Timer::of_conn(conn.id) {
                if let Some(at) = self.conn_deadline(conn, timer) {
                    expected.insert((at, timer));
                }
            }
        }
        for &peer in self.peers.keys() {
            if let Some((at, _)) = self.deadline(Timer::Redial(peer)) {
                expected.insert((at, Timer::Redial(peer)));
            }
        }
        assert!(
            expected == self.timers.by_time,
            "node {}: the timer index is out of date: {} timers armed by the rules, {} indexed; first differences: {:?} / {:?}",
            self.me.0,
            expected.len(),
            self.timers.by_time.len(),
            expected.difference(&self.timers.by_time).next(),
            self.timers.by_time.difference(&expected).next(),
        );
        let awake: BTreeSet<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up.is_some() || p.learned)
            .map(|(&id, _)| id)
            .collect();
        assert!(
            awake == self.timers.awake,
            "node {}: the index's awake peers are out of date",
            self.me.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Option<Instant> {
        Some(base + Duration::from_millis(ms))
    }

    #[test]
    fn a_rearmed_timer_moves_and_a_disarmed_one_goes() {
        let base = Instant::now();
        let mut index = TimerIndex::default();
        let ping = Timer::Ping(ConnId(1));
        index.set(ping, at(base, 50));
        assert_eq!(index.earliest(), at(base, 50));
        // Later: the old place is gone, not left behind as a stale wake-up.
        index.set(ping, at(base, 80));
        assert_eq!(index.earliest(), at(base, 80));
        assert_eq!(index.len(), 1);
        // Earlier, and the same again (a no-op).
        index.set(ping, at(base, 10));
        index.set(ping, at(base, 10));
        assert_eq!(index.earliest(), at(base, 10));
        assert_eq!(index.len(), 1);
        index.set(ping, None);
        assert_eq!(index.earliest(), None);
        assert_eq!(index.armed(ping), None);
        assert_eq!(index.len(), 0);
        // Disarming what is not armed changes nothing.
        index.set(Timer::Silence(ConnId(1)), None);
        assert_eq!(index.len(), 0);
    }

    /// The index's hasher spreads the keys it sees (sequential connection
    /// ids, four timers each, and node ids) over a table's low bits and
    /// its top-bit tags: no bucket of 1024 gets more than a handful, so a
    /// lookup stays one or two probes.
    #[test]
    fn the_id_hasher_spreads_sequential_ids() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<IdHasher>::default();
        let keys: Vec<Timer> = (0..1024u64)
            .flat_map(|id| Timer::of_conn(ConnId(id)))
            .chain((0..1024u16).map(|n| Timer::Redial(NodeId(n))))
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| build.hash_one(k)).collect();
        let distinct: BTreeSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len(), "two keys hash alike");
        let mut buckets = [0u32; 1024];
        let mut tags = [0u32; 128];
        for h in &hashes {
            buckets[(h & 1023) as usize] += 1;
            tags[(h >> 57) as usize] += 1;
        }
        // 5 keys per bucket on average (the fullest held 11 when written).
        let fullest = buckets.iter().max().copied().unwrap_or(0);
        assert!(
            fullest <= 16,
            "a bucket holds {fullest} of {} keys",
            keys.len()
        );
        // 40 keys per tag on average (the fullest had 48).
        let tag_fullest = tags.iter().max().copied().unwrap_or(0);
        assert!(tag_fullest <= 120, "a tag is shared by {tag_fullest} keys");
    }

    #[test]
    fn two_timers_at_one_instant_are_both_held_and_due() {
        let base = Instant::now();
        let mut index = TimerIndex::default();
        index.set(Timer::Ping(ConnId(2)), at(base, 30));
        index.set(Timer::Silence(ConnId(7)), at(base, 30));
        index.set(Timer::Redial(NodeId(3)), at(base, 31));
        let due: Vec<Timer> = index.due(base + Duration::from_millis(29)).collect();
        assert!(due.is_empty());
        let due: BTreeSet<Timer> = index.due(base + Duration::from_millis(30)).collect();
        assert_eq!(
            due,
            BTreeSet::from([Timer::Ping(ConnId(2)), Timer::Silence(ConnId(7))])
        );
        // Moving one leaves the other where it was.
        index.set(Timer::Ping(ConnId(2)), at(base, 40));
        assert_eq!(index.armed(Timer::Silence(ConnId(7))), at(base, 30));
        assert_eq!(index.earliest(), at(base, 30));
        let due: Vec<Timer> = index.due(base + Duration::from_millis(31)).collect();
        assert_eq!(
            due,
            vec![Timer::Silence(ConnId(7)), Timer::Redial(NodeId(3))]
        );
    }

    #[test]
    fn the_earliest_across_many_connections() {
        const CONNS: u64 = 4_096;
        let base = Instant::now();
        let mut index = TimerIndex::default();
        let mut rng = crate::rng::Rng::new(7);
        let mut deadlines = BTreeMap::new();
        for id in 0..CONNS {
            for timer in Timer::of_conn(ConnId(id)) {
                let t = at(base, 1 + rng.below(1_000_000));
                index.set(timer, t);
                deadlines.insert(timer, t);
            }
        }
        // Re-arm half of them, disarm a quarter, and compare with a scan
        // after each round.
        for round in 0..4u64 {
            for id in (round..CONNS).step_by(2) {
                let timer = Timer::Ping(ConnId(id));
                let t = at(base, 1 + rng.below(1_000_000));
                index.set(timer, t);
                deadlines.insert(timer, t);
            }
            for id in (round..CONNS).step_by(4) {
                let timer = Timer::Silence(ConnId(id));
                index.set(timer, None);
                deadlines.insert(timer, None);
            }
            let scanned = deadlines.values().flatten().min().copied();
            assert_eq!(index.earliest(), scanned, "round {round}");
            let armed = deadlines.values().flatten().count();
            assert_eq!(index.len(), armed);
            let now = base + Duration::from_millis(1_000);
            let due = index.due(now).count();
            let expected = deadlines.values().flatten().filter(|&&t| t <= now).count();
            assert_eq!(due, expected);
        }
    }

    #[test]
    fn tracked_notes_every_changed_key() {
        let mut map: Tracked<u32, u32> = Tracked::new();
        assert!(!map.pending());
        map.insert(1, 10);
        map.insert(2, 20);
        assert_eq!(map.take_touched(Vec::new()), Some(vec![1, 2]));
        assert!(!map.pending());
        // Reading notes nothing; handing out, removing and inserting do.
        assert_eq!(map.get(&1), Some(&10));
        assert!(!map.pending());
        if let Some(v) = map.get_mut(&2) {
            *v += 1;
        }
        map.remove(&1);
        assert_eq!(map.take_touched(Vec::new()), Some(vec![2, 1]));
        // Every value at once: every key.
        for v in map.values_mut() {
            *v += 1;
        }
        assert!(map.pending());
        assert_eq!(map.take_touched(Vec::new()), None);
        assert!(!map.pending());
    }

    /// On a running cluster: connections up, one closed by a crash, its
    /// peer's redial armed; after each step the index equals the rules and
    /// holds nothing for a connection that is gone.
    #[cfg(feature = "sim")]
    #[test]
    fn a_closed_connection_leaves_no_timer_behind() {
        use crate::sim::Sim;
        let mut sim = Sim::connected(4, 11);
        let check = |sim: &Sim| {
            for id in sim.running() {
                let core = sim.core(id).expect("running");
                core.check_timers();
                for &(_, timer) in &core.timers.by_time {
                    if let Some(conn) = timer.conn() {
                        assert!(core.conns.contains_key(&conn), "{timer:?} left behind");
                    }
                }
                assert_eq!(core.indexed_timeout(), core.scanned_timeout());
            }
        };
        check(&sim);
        let core = sim.core(NodeId(0)).expect("running");
        let before: Vec<ConnId> = core.conns.keys().copied().collect();
        // Three up connections: a silence and a ping timer each.
        assert_eq!(before.len(), 3);
        assert_eq!(core.timers.len(), 6);
        sim.crash(NodeId(3));
        sim.run_for(Duration::from_secs(1));
        check(&sim);
        let core = sim.core(NodeId(0)).expect("running");
        let gone: Vec<ConnId> = before
            .iter()
            .copied()
            .filter(|c| !core.conns.contains_key(c))
            .collect();
        assert_eq!(gone.len(), 1, "the crashed peer's connection closed");
        for timer in Timer::of_conn(gone[0]) {
            assert_eq!(core.timers.armed(timer), None);
        }
        // Node 3 is down and redialled (its dials fail): armed between
        // dials, or a dial in progress.
        let peer = &core.peers[&NodeId(3)];
        assert!(peer.up.is_none());
        assert_eq!(
            core.timers.armed(Timer::Redial(NodeId(3))),
            peer.retry_at,
            "the redial follows the peer's state"
        );
        sim.restart(NodeId(3));
        sim.run_for(Duration::from_secs(5));
        check(&sim);
        assert!(sim.fully_connected());
    }
}
