//! The driver task: owns the core, moves ciphertext between sockets and the
//! core, and sleeps until the core's next timeout. One per node.
//!
//! The driver polls every connection's socket itself, in one task: a read
//! goes straight from the socket into the core, and a transmit straight from
//! the core into the socket, with no task or channel in between (each hop
//! would cost a wake-up per message on the latency path). A socket that
//! cannot take more keeps its unwritten transmits; the core caps ciphertext
//! in flight per connection, so that queue stays small. Only dialling and
//! accepting run in tasks of their own.
//!
//! **Inline transmit.** The driver's state sits behind a mutex that the
//! driver task takes while it works and drops while it sleeps. A user
//! thread that queued output for an idle link takes it (`try_lock`, never
//! waiting) and writes the output into the socket itself
//! ([`Driver::transmit_inline`]): one wake-up less per message on the
//! latency path, and one party owns the core at a time. Whatever needs the
//! driver (a socket that would block, an output other than a transmit, an
//! earlier deadline) makes it return false, and the driver is woken as
//! before. A link that transmitted within [`INLINE_IDLE`], or that the
//! driver just flushed a burst to ([`INLINE_BUSY_BYTES`], for
//! [`INLINE_BUSY`]), is left to the driver, which coalesces a burst into
//! few TLS records.
//!
//! **Inline receive.** The mirror image, for the thread about to wait for
//! a message (an empty mailbox, a request without its reply): while the
//! driver sleeps, that thread takes its state and reads the sockets of the
//! connection that last brought input and the one last written to
//! ([`Driver::receive_inline`], through [`Runtime::poll_read_now`], which
//! reads before the runtime's poller has seen the socket readable). A
//! message already in the socket is then received with no wake-up: without
//! it, the driver's thread is woken by the socket and the waiting thread by
//! the driver, and on an idle machine each of those costs tens of µs. The
//! driver still wakes once for the readiness the read leaves behind, and
//! finds nothing.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::StreamExt;
use std::sync::{Arc, Mutex, Weak};

use reign_proto::{
    ConnId, Core, Event, Input, Output, ReloadError, Reloaded, ResolvedSpec, WakeSignal,
};

use crate::runtime::Runtime;
use crate::signal::Stop;
use reign_proto::poison::lock;

/// Bytes asked of a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// Reads taken from one socket before the others get their turn.
const READS_PER_TURN: usize = 4;
/// Events (new sockets) that may wait for the driver.
pub(crate) const EVENT_BACKLOG: usize = 64;
/// A node that transmitted more recently than this is busy: its output is
/// left to the driver, which coalesces a burst of sends into few TLS
/// records and writes, instead of one record and one write per send in the
/// senders' threads. Shorter than a whole hop (about 7 µs on loopback once
/// the receiver reads inline too): at 5 µs every third hop of a one-hop
/// loop was left to the driver and cost two wake-ups. A flood sends every
/// fraction of a µs and stays coalesced (and [`INLINE_BUSY`] keeps a link
/// that flushed a burst with the driver).
const INLINE_IDLE: Duration = Duration::from_micros(1);
/// A driver transmit of at least this many bytes of TLS records carried a
/// burst of messages (one small message is a record of a few hundred
/// bytes): the link is flooding, and the next [`INLINE_BUSY`] of its output
/// is left to the driver too. Without this, the first send after each
/// driver flush found the link idle for [`INLINE_IDLE`] and went out alone
/// in its own record, and each record costs rustls an allocation.
const INLINE_BUSY_BYTES: usize = 4 * 1024;
/// How long a burst ([`INLINE_BUSY_BYTES`]) keeps inline transmit off:
/// longer than the driver takes to wake and flush again under a flood, so
/// the flood stays coalesced; a link that goes quiet for this long is idle
/// again and its next send goes inline.
const INLINE_BUSY: Duration = Duration::from_micros(200);
/// Rounds of transmit → write → `Written` an inline transmit may take
/// before it leaves the rest to the driver.
const INLINE_ROUNDS: usize = 4;
/// How long a closing connection may keep flushing what it has and then
/// wait for the peer to close its side (bounds a peer that does not read).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) enum DriverEvent<R: Runtime> {
    Accepted {
        reader: R::Reader,
        writer: R::Writer,
        label: String,
    },
    Connected {
        conn: ConnId,
        reader: R::Reader,
        writer: R::Writer,
    },
    ConnectFailed {
        conn: ConnId,
        error: String,
    },
    Shutdown,
    /// Apply a new spec; the outcome goes back on `reply`.
    Reload {
        spec: Box<ResolvedSpec>,
        reply: Sender<Result<Reloaded, ReloadError>>,
    },
}

/// Why a node stopped by itself, shared with the [`Reign`](crate::Reign)
/// handles.
pub(crate) type Failure = Arc<Mutex<Option<String>>>;

/// Why each peer's last connection closed (from `Event::PeerDown`), shared
/// with the node handles for the admin endpoint.
pub(crate) type CloseReasons = Arc<Mutex<BTreeMap<reign_proto::NodeId, String>>>;

/// An open socket and what the driver holds for it.
struct Socket<R: Runtime> {
    reader: R::Reader,
    writer: R::Writer,
    /// Transmits not yet fully written; `written` bytes of the first are.
    outgoing: VecDeque<Vec<u8>>,
    written: usize,
    /// The core wants no input from this connection for now.
    paused: bool,
    /// The core closed the connection: flush, shut the write side, read
    /// until the peer closes too, forget; give up at this time.
    closing: Option<Instant>,
    /// The write side is shut (after a close): only reading remains.
    write_shut: bool,
}

enum SocketSlot<R: Runtime> {
    /// A dial in flight; stopping it cancels the dial.
    Dialing(Stop),
    Open(Box<Socket<R>>),
}

pub(crate) struct Driver<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) core: Core,
    events: Pin<Box<Receiver<DriverEvent<R>>>>,
    events_tx: Sender<DriverEvent<R>>,
    /// Every task holds a clone; all dropped means all tasks are gone.
    task_guard: Option<Sender<()>>,
    tasks_done: Pin<Box<Receiver<()>>>,
    pub(crate) stop_accept: Stop,
    conns: BTreeMap<ConnId, SocketSlot<R>>,
    shutdown_deadline: Option<Instant>,
    tasks_finished: bool,
    /// Why the node must stop by itself (another process holds its id),
    /// shared with the node handles.
    failure: Failure,
    /// The core reported such a reason: shut down after this pump.
    must_stop: bool,
    /// Why each peer's last connection closed (read by the admin endpoint).
    pub(crate) close_reasons: CloseReasons,
    /// The one buffer every socket is read into: reads happen one at a
    /// time in this task and the core copies what it keeps, so a buffer
    /// per socket would only cost an idle link [`READ_CHUNK`] bytes.
    read_buf: Vec<u8>,
    /// Outputs an inline transmit met that only the driver may carry out
    /// (dials, closes, events), in order, for its next pump.
    deferred: VecDeque<Output>,
    /// When the core last produced a transmit (see [`INLINE_IDLE`]).
    last_transmit: Option<Instant>,
    /// Until when the driver keeps a flooding link's output to itself
    /// (see [`INLINE_BUSY_BYTES`]).
    busy_until: Option<Instant>,
    /// The deadline the driver sleeps until, while it sleeps.
    armed: Option<Option<Instant>>,
    /// The run loop ended: no more inline transmits.
    done: bool,
    /// The driver task's waker, from its last poll: an inline receive
    /// reads with it, so a socket that has nothing registers the driver
    /// exactly as the driver's own read would.
    waker: Option<std::task::Waker>,
    /// The connection that last brought input, and the one last written
    /// to: where an inline receive looks (see [`Driver::receive_inline`]).
    last_read: Option<ConnId>,
    last_written: Option<ConnId>,
    /// Until when inline receives leave the sockets to the driver: one
    /// read a burst ([`INLINE_BUSY_BYTES`]), as for inline transmits.
    receive_busy_until: Option<Instant>,
}

/// What woke the driver.
enum Wake<R: Runtime> {
    /// A socket made progress (or failed): pump the core again.
    Io,
    Event(DriverEvent<R>),
    Signal,
    Timer,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        rt: R,
        core: Core,
        events: Receiver<DriverEvent<R>>,
        events_tx: Sender<DriverEvent<R>>,
        (task_guard, tasks_done): (Sender<()>, Receiver<()>),
        stop_accept: Stop,
        failure: Failure,
    ) -> Driver<R> {
        Driver {
            rt,
            core,
            events: Box::pin(events),
            events_tx,
            task_guard: Some(task_guard),
            tasks_done: Box::pin(tasks_done),
            stop_accept,
            conns: BTreeMap::new(),
            shutdown_deadline: None,
            tasks_finished: false,
            failure,
            must_stop: false,
            close_reasons: CloseReasons::default(),
            read_buf: vec![0u8; READ_CHUNK],
            deferred: VecDeque::new(),
            last_transmit: None,
            busy_until: None,
            armed: None,
            done: false,
            waker: None,
            last_read: None,
            last_written: None,
            receive_busy_until: None,
        }
    }

    pub(crate) async fn run(self) {
        let wake = self.core.wake_signal();
        let node = self.core.id().0;
        let shared = Arc::new(Mutex::new(self));
        let weak = Arc::downgrade(&shared);
        let receiver = weak.clone();
        wake.set_inline(Box::new(move || inline_transmit(&weak)));
        wake.set_inline_receive(Box::new(move || inline_receive(&receiver)));
        loop {
            let sleep = {
                let mut driver = lock(&shared);
                wake.disarm();
                driver.armed = None;
                let now = Instant::now();
                while let Ok(event) = driver.events.try_recv() {
                    driver.handle(now, event);
                }
                driver.pump(now);
                if driver.must_stop && driver.task_guard.is_some() {
                    driver.shut_down(now);
                }
                if driver.finished() {
                    driver.done = true;
                    break;
                }
                let deadline = driver.next_deadline();
                driver.armed = Some(deadline);
                wake.arm(deadline);
                deadline.map(|d| driver.rt.sleep_until(d))
            };
            let mut sleep = std::pin::pin!(sleep);
            let woke = std::future::poll_fn(|cx| {
                lock(&shared).poll_once(cx, &wake, sleep.as_mut().as_pin_mut())
            })
            .await;
            let mut driver = lock(&shared);
            let now = Instant::now();
            match woke {
                Wake::Io | Wake::Signal => {}
                Wake::Event(event) => driver.handle(now, event),
                Wake::Timer => driver.on_timer(now),
            }
        }
        tracing::debug!(node, "driver finished");
    }

    /// Writes the output user threads queued into idle sockets, from the
    /// calling thread (see the module header); whether everything is done
    /// and the driver need not wake.
    fn transmit_inline(&mut self) -> bool {
        if self.done || self.task_guard.is_none() || self.must_stop {
            // Shutting down: the driver watches the drain.
            return false;
        }
        let Some(armed) = self.armed else {
            // The driver is between a wake-up and its next sleep.
            return false;
        };
        let now = Instant::now();
        if self
            .last_transmit
            .is_some_and(|t| now.saturating_duration_since(t) < INLINE_IDLE)
            || self.busy_until.is_some_and(|t| now < t)
        {
            return false;
        }
        self.flush_inline(now, armed)
    }

    /// Carries out the core's output from a thread that is not the driver
    /// (inline transmit and receive): transmits go into the sockets, the
    /// rest waits for the driver; whether everything is done and the
    /// driver need not wake.
    fn flush_inline(&mut self, now: Instant, armed: Option<Instant>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut complete = true;
        let mut produced = false;
        for _ in 0..INLINE_ROUNDS {
            produced = false;
            while let Some(output) = self.core.poll_output(now) {
                match output {
                    Output::Transmit { conn, data } => {
                        produced = true;
                        if data.len() >= INLINE_BUSY_BYTES {
                            self.busy_until = Some(now + INLINE_BUSY);
                        }
                        match self.conns.get_mut(&conn) {
                            Some(SocketSlot::Open(link)) => link.outgoing.push_back(data),
                            _ => self.core.recycle(data),
                        }
                    }
                    other => {
                        self.deferred.push_back(other);
                        complete = false;
                    }
                }
            }
            if !produced {
                break;
            }
            let mut gone = Vec::new();
            for (&id, slot) in self.conns.iter_mut() {
                let SocketSlot::Open(link) = slot else {
                    continue;
                };
                if link.outgoing.is_empty() {
                    continue;
                }
                // The no-op waker may replace the driver's write waker:
                // a socket left with output needs the driver awake.
                self.last_written = Some(id);
                match write_link::<R>(&mut self.core, id, link, &mut cx, now) {
                    Ok(_) if link.outgoing.is_empty() => {}
                    Ok(_) => complete = false,
                    Err(()) => {
                        gone.push(id);
                        complete = false;
                    }
                }
            }
            for id in gone {
                self.conns.remove(&id);
            }
            self.last_transmit = Some(Instant::now());
        }
        if produced {
            // The last round still had output: more may be queued, and its
            // peer stays listed, so no later send would announce it.
            complete = false;
        }
        if self
            .core
            .poll_timeout()
            .is_some_and(|t| armed.is_none_or(|a| t < a))
        {
            // A deadline earlier than the driver's sleep.
            complete = false;
        }
        complete
    }

    /// Reads, from the calling thread, what the most recently active
    /// sockets hold and feeds it to the core (see
    /// [`WakeSignal::set_inline_receive`]); whether the core got any input.
    /// Only while the driver sleeps with nothing left for it: at most the
    /// connection that last brought input and the one last written to are
    /// asked (a request's reply comes back where it went), one read of at
    /// most [`INLINE_BUSY_BYTES`] each, so a thread about to wait spends a
    /// syscall or two and never more than a reply's worth of decryption; a
    /// read that fills it is a flood's, and the link is left to the driver
    /// for [`INLINE_BUSY`].
    /// Output the input caused goes out as an inline transmit's would;
    /// anything that needs the driver wakes it.
    fn receive_inline(&mut self, wake: &WakeSignal) -> bool {
        if self.done || self.task_guard.is_none() || self.must_stop || !self.deferred.is_empty() {
            return false;
        }
        let Some(armed) = self.armed else {
            return false;
        };
        let now = Instant::now();
        if self.receive_busy_until.is_some_and(|t| now < t) {
            // Checked before the waker is cloned: under a flood this is
            // the common answer, and it should cost no atomic increment.
            return false;
        }
        let Some(waker) = self.waker.clone() else {
            return false;
        };
        let mut cx = Context::from_waker(&waker);
        let mut got = 0;
        let mut fed = false;
        let mut needs_driver = false;
        let mut candidates = [self.last_read, self.last_written];
        if candidates[1] == candidates[0] {
            candidates[1] = None;
        }
        for id in candidates.into_iter().flatten() {
            let Some(SocketSlot::Open(link)) = self.conns.get_mut(&id) else {
                continue;
            };
            if link.paused || link.closing.is_some() {
                continue;
            }
            match read_link::<R>(
                &mut self.core,
                id,
                link,
                &mut self.read_buf[..INLINE_BUSY_BYTES],
                &mut cx,
                now,
                (R::poll_read_now, 1, &mut got),
            ) {
                LinkState::Idle => {}
                LinkState::Progress => {
                    fed = true;
                    self.last_read = Some(id);
                }
                LinkState::Done => {
                    self.conns.remove(&id);
                    fed = true;
                    needs_driver = true;
                }
            }
        }
        if fed && !self.flush_inline(now, armed) {
            needs_driver = true;
        }
        if fed {
            self.core.node().count_inline_receive();
        }
        if got >= INLINE_BUSY_BYTES {
            // A burst, not a reply: the link is flooding, and the driver
            // reads it in big chunks while this thread gets on with its
            // messages (see `INLINE_BUSY`).
            self.receive_busy_until = Some(now + INLINE_BUSY);
        }
        if needs_driver {
            wake.notify();
        }
        fed
    }

    fn finished(&self) -> bool {
        self.task_guard.is_none() && self.conns.is_empty() && self.tasks_finished
    }

    fn poll_once(
        &mut self,
        cx: &mut Context<'_>,
        wake: &WakeSignal,
        sleep: Option<Pin<&mut (impl Future<Output = ()> + Send + 'static)>>,
    ) -> Poll<Wake<R>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        let now = Instant::now();
        if self.poll_sockets(cx, now) {
            return Poll::Ready(Wake::Io);
        }
        if let Poll::Ready(Some(event)) = self.events.as_mut().poll_next(cx) {
            return Poll::Ready(Wake::Event(event));
        }
        if wake.poll_wait(cx).is_ready() {
            return Poll::Ready(Wake::Signal);
        }
        if self.task_guard.is_none() && !self.tasks_finished {
            if let Poll::Ready(None) = self.tasks_done.as_mut().poll_next(cx) {
                self.tasks_finished = true;
                return Poll::Ready(Wake::Io);
            }
        }
        if let Some(sleep) = sleep {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        Poll::Pending
    }

    /// Writes and reads every open socket as far as it goes without
    /// waiting; whether anything happened.
    fn poll_sockets(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progress = false;
        let mut gone = Vec::new();
        for (&id, slot) in self.conns.iter_mut() {
            let SocketSlot::Open(link) = slot else {
                continue;
            };
            match poll_link::<R>(
                &mut self.core,
                id,
                link,
                &mut self.read_buf,
                cx,
                now,
                &mut self.last_read,
            ) {
                LinkState::Idle => {}
                LinkState::Progress => progress = true,
                LinkState::Done => {
                    gone.push(id);
                    progress = true;
                }
            }
        }
        for id in gone {
            self.conns.remove(&id);
        }
        progress
    }

    fn next_deadline(&self) -> Option<Instant> {
        let closing = self
            .conns
            .values()
            .filter_map(|slot| match slot {
                SocketSlot::Open(link) => link.closing,
                SocketSlot::Dialing(_) => None,
            })
            .min();
        [self.core.poll_timeout(), closing, self.shutdown_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_timer(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_input(now, Input::Timeout);
        }
        // A peer that does not read cannot hold a closing socket forever.
        self.conns.retain(|_, slot| match slot {
            SocketSlot::Open(link) => link.closing.is_none_or(|deadline| deadline > now),
            SocketSlot::Dialing(_) => true,
        });
        if self.shutdown_deadline.is_some_and(|t| t <= now) {
            // Grace is over: drop whatever still runs.
            for slot in self.conns.values() {
                if let SocketSlot::Dialing(stop) = slot {
                    stop.stop();
                }
            }
            self.conns.clear();
            self.shutdown_deadline = None;
        }
    }

    fn open(&mut self, conn: ConnId, reader: R::Reader, writer: R::Writer) {
        self.conns.insert(
            conn,
            SocketSlot::Open(Box::new(Socket {
                reader,
                writer,
                outgoing: VecDeque::new(),
                written: 0,
                paused: false,
                closing: None,
                write_shut: false,
            })),
        );
    }

    fn handle(&mut self, now: Instant, event: DriverEvent<R>) {
        match event {
            DriverEvent::Accepted {
                reader,
                writer,
                label,
            } => match self.core.accept(now, &label) {
                Ok(conn) => self.open(conn, reader, writer),
                Err(e) => {
                    // The core logged it (DEBUG) and counts it in its summary.
                    tracing::debug!(node = self.core.id().0, from = label, error = %e, "connection refused");
                }
            },
            DriverEvent::Connected {
                conn,
                reader,
                writer,
            } => {
                if matches!(self.conns.get(&conn), Some(SocketSlot::Dialing(_))) {
                    self.open(conn, reader, writer);
                    self.core.handle_input(now, Input::Connected { conn });
                }
            }
            DriverEvent::ConnectFailed { conn, error } => {
                self.conns.remove(&conn);
                self.core.handle_input(
                    now,
                    Input::ConnectFailed {
                        conn,
                        error: &error,
                    },
                );
            }
            DriverEvent::Shutdown => self.shut_down(now),
            DriverEvent::Reload { spec, reply } => {
                let outcome = self.core.reload(now, *spec);
                if let Err(e) = &outcome {
                    // The caller gets the error and logs it (`reign node`
                    // at WARN): a second WARN here would say it twice.
                    tracing::debug!(node = self.core.id().0, error = %e, "spec reload refused; keeping the old spec");
                }
                let _ = reply.try_send(outcome);
            }
        }
    }

    /// Begins a graceful shutdown: the core drains its outbound queues (up
    /// to `Tuning::drain_timeout`) while this loop keeps moving bytes, then
    /// says goodbye and closes everything. Past the drain deadline plus
    /// [`CLOSE_GRACE`] whatever still runs is dropped, so a peer that stops
    /// reading cannot hold the shutdown longer.
    fn shut_down(&mut self, now: Instant) {
        if self.task_guard.is_some() {
            self.core.shutdown(now);
            self.stop_accept.stop();
            self.pump(now);
            self.task_guard = None;
            let drained_by = self.core.drain_deadline().unwrap_or(now).max(now);
            self.shutdown_deadline = Some(drained_by + CLOSE_GRACE);
        }
    }

    /// Carries out everything the core wants done now (first what an
    /// inline transmit left for the driver).
    fn pump(&mut self, now: Instant) {
        while let Some(output) = self.deferred.pop_front() {
            self.carry_out(now, output);
        }
        while let Some(output) = self.core.poll_output(now) {
            self.carry_out(now, output);
        }
    }

    fn carry_out(&mut self, now: Instant, output: Output) {
        match output {
            Output::Transmit { conn, data } => {
                self.last_transmit = Some(now);
                if data.len() >= INLINE_BUSY_BYTES {
                    self.busy_until = Some(now + INLINE_BUSY);
                }
                match self.conns.get_mut(&conn) {
                    Some(SocketSlot::Open(link)) => link.outgoing.push_back(data),
                    _ => self.core.recycle(data),
                }
            }
            Output::Connect { conn, address, .. } => self.dial(conn, address),
            Output::Close { conn } => match self.conns.get_mut(&conn) {
                // Flush what is queued (a goodbye, an alert), then close.
                Some(SocketSlot::Open(link)) => link.closing = Some(now + CLOSE_GRACE),
                Some(SocketSlot::Dialing(stop)) => {
                    stop.stop();
                    self.conns.remove(&conn);
                }
                None => {}
            },
            Output::PauseReading { conn } => {
                if let Some(SocketSlot::Open(link)) = self.conns.get_mut(&conn) {
                    link.paused = true;
                }
            }
            Output::ResumeReading { conn } => {
                if let Some(SocketSlot::Open(link)) = self.conns.get_mut(&conn) {
                    link.paused = false;
                }
            }
            Output::Event(Event::IdentityConflict { by, reason }) => {
                tracing::error!(
                    node = self.core.id().0,
                    by = by.0,
                    reason,
                    "another process with this node id is live; stopping this one"
                );
                let mut failure = lock(&self.failure);
                failure.get_or_insert(format!("node {} refused this process: {reason}", by.0));
                self.must_stop = true;
            }
            Output::Event(event) => {
                if let Event::PeerDown { node, reason } = &event {
                    lock(&self.close_reasons).insert(*node, reason.to_string());
                }
                tracing::debug!(node = self.core.id().0, ?event, "core event");
            }
        }
    }

    fn dial(&mut self, conn: ConnId, address: String) {
        let Some(guard) = self.task_guard.clone() else {
            return;
        };
        let stop = Stop::default();
        self.conns.insert(conn, SocketSlot::Dialing(stop.clone()));
        let rt = self.rt.clone();
        let events = self.events_tx.clone();
        self.rt.spawn(async move {
            let _guard = guard;
            let event = match stop.guard(rt.connect(&address)).await {
                None => return,
                Some(Ok((reader, writer))) => DriverEvent::Connected {
                    conn,
                    reader,
                    writer,
                },
                Some(Err(e)) => DriverEvent::ConnectFailed {
                    conn,
                    error: format!("{address}: {e}"),
                },
            };
            let _ = events.send(event).await;
        });
    }
}

enum LinkState {
    Idle,
    Progress,
    /// The socket is finished with (closed by either side, or failed).
    Done,
}

/// The driver's inline receive, as installed in the node's
/// [`WakeSignal`]: runs in a thread about to wait for a message.
fn inline_receive<R: Runtime>(driver: &Weak<Mutex<Driver<R>>>) -> bool {
    let Some(shared) = driver.upgrade() else {
        return false;
    };
    // Never waits: an awake driver reads the sockets itself (and spinning
    // here for it under a flood took CPU the driver needed).
    let Ok(mut driver) = shared.try_lock() else {
        return false;
    };
    let wake = driver.core.wake_signal();
    driver.receive_inline(&wake)
}

/// The driver's inline transmit, as installed in the node's
/// [`WakeSignal`]: runs in a user thread when the driver is not working.
fn inline_transmit<R: Runtime>(driver: &Weak<Mutex<Driver<R>>>) -> bool {
    let Some(shared) = driver.upgrade() else {
        return false;
    };
    // Never waits: a busy driver will see the output itself once woken.
    // (The driver's own thread also lands here, holding the lock.)
    let Ok(mut driver) = shared.try_lock() else {
        return false;
    };
    driver.transmit_inline()
}

/// Writes what the socket takes: `Ok(progress)`, or `Err` when the socket
/// is finished with (the core was told).
fn write_link<R: Runtime>(
    core: &mut Core,
    id: ConnId,
    link: &mut Socket<R>,
    cx: &mut Context<'_>,
    now: Instant,
) -> Result<bool, ()> {
    let mut progress = false;
    while let Some(front) = link.outgoing.front() {
        match R::poll_write(&mut link.writer, cx, &front[link.written..]) {
            Poll::Pending => break,
            Poll::Ready(Ok(n)) if n > 0 => {
                link.written += n;
                if link.written == front.len() {
                    let buffer = link.outgoing.pop_front().expect("front exists");
                    link.written = 0;
                    core.handle_input(
                        now,
                        Input::Written {
                            conn: id,
                            bytes: buffer.len(),
                        },
                    );
                    core.recycle(buffer);
                }
                progress = true;
            }
            Poll::Ready(result) => {
                let error = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "the socket accepts no more bytes".into(),
                };
                if link.closing.is_none() {
                    core.handle_input(
                        now,
                        Input::Closed {
                            conn: id,
                            error: Some(&error),
                        },
                    );
                }
                return Err(());
            }
        }
    }
    Ok(progress)
}

/// Writes what the socket takes, then reads what it has.
fn poll_link<R: Runtime>(
    core: &mut Core,
    id: ConnId,
    link: &mut Socket<R>,
    read_buf: &mut [u8],
    cx: &mut Context<'_>,
    now: Instant,
    last_read: &mut Option<ConnId>,
) -> LinkState {
    let Ok(mut progress) = write_link::<R>(core, id, link, cx, now) else {
        return LinkState::Done;
    };
    if link.closing.is_some() {
        if !link.write_shut {
            if !link.outgoing.is_empty() {
                return if progress {
                    LinkState::Progress
                } else {
                    LinkState::Idle
                };
            }
            // Everything is written: shut the write side.
            match R::poll_close(&mut link.writer, cx) {
                Poll::Pending => return LinkState::Idle,
                Poll::Ready(Err(_)) => return LinkState::Done,
                Poll::Ready(Ok(())) => link.write_shut = true,
            }
        }
        // Then read (and discard) until the peer closes its side too: a
        // socket closed with unread input is reset by the kernel, which
        // throws away what it has not sent yet — the goodbye and the last
        // messages a shutdown drained. The closing deadline bounds this.
        for _ in 0..READS_PER_TURN {
            match R::poll_read(&mut link.reader, cx, read_buf) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return LinkState::Done,
                Poll::Ready(Ok(_)) => progress = true,
            }
        }
        return if progress {
            LinkState::Progress
        } else {
            LinkState::Idle
        };
    }
    if !link.paused {
        match read_link::<R>(
            core,
            id,
            link,
            read_buf,
            cx,
            now,
            (R::poll_read, READS_PER_TURN, &mut 0),
        ) {
            LinkState::Idle => {}
            LinkState::Progress => {
                *last_read = Some(id);
                progress = true;
            }
            LinkState::Done => return LinkState::Done,
        }
    }
    if progress {
        LinkState::Progress
    } else {
        LinkState::Idle
    }
}

/// How a link's socket is read: [`Runtime::poll_read`] by the driver,
/// [`Runtime::poll_read_now`] by an inline receive.
type ReadFn<R> =
    fn(&mut <R as Runtime>::Reader, &mut Context<'_>, &mut [u8]) -> Poll<std::io::Result<usize>>;

/// Reads what the socket has (up to `reads` reads of `read_buf`, with
/// `read`, adding the bytes to `got`) into the core: `Progress` when the
/// core got bytes, `Done` when the socket is finished with (the core was
/// told).
fn read_link<R: Runtime>(
    core: &mut Core,
    id: ConnId,
    link: &mut Socket<R>,
    read_buf: &mut [u8],
    cx: &mut Context<'_>,
    now: Instant,
    (read, reads, got): (ReadFn<R>, usize, &mut usize),
) -> LinkState {
    let mut progress = false;
    for _ in 0..reads {
        match read(&mut link.reader, cx, read_buf) {
            Poll::Pending => break,
            Poll::Ready(Ok(0)) => {
                core.handle_input(
                    now,
                    Input::Closed {
                        conn: id,
                        error: None,
                    },
                );
                return LinkState::Done;
            }
            Poll::Ready(Ok(n)) => {
                core.handle_input(
                    now,
                    Input::Received {
                        conn: id,
                        bytes: &read_buf[..n],
                    },
                );
                progress = true;
                *got += n;
                if n < read_buf.len() {
                    // The socket had less than asked: it is empty now, and
                    // asking again would only cost a syscall that says so.
                    break;
                }
            }
            Poll::Ready(Err(e)) => {
                let error = e.to_string();
                core.handle_input(
                    now,
                    Input::Closed {
                        conn: id,
                        error: Some(&error),
                    },
                );
                return LinkState::Done;
            }
        }
    }
    if progress {
        LinkState::Progress
    } else {
        LinkState::Idle
    }
}
