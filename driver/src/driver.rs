//! The driver task: owns the core, moves ciphertext between sockets and the
//! core, and sleeps until the core's next timeout. One per node.
//!
//! Sockets get two small tasks each (reader and writer) so that a slow peer
//! never blocks the driver: readers push what they read into one bounded
//! channel (backpressure reaches TCP when the driver falls behind), writers
//! take transmits from their own queue and report how much they wrote, which
//! the core uses to cap ciphertext in flight per connection.

use std::collections::BTreeMap;
use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use reign_proto::{ConnId, Core, Input, Output};

use crate::runtime::Runtime;
use crate::signal::{Gate, Stop};

/// Bytes a reader asks the socket for at once.
const READ_CHUNK: usize = 64 * 1024;
/// Read chunks that may wait for the driver: bounds memory per node.
pub(crate) const EVENT_BACKLOG: usize = 64;
/// How long a closed connection's writer may keep flushing.
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
    Received {
        conn: ConnId,
        /// A read buffer, of which the first `len` bytes arrived; it goes
        /// back to the connection's reader afterwards.
        buffer: Vec<u8>,
        len: usize,
    },
    Written {
        conn: ConnId,
        /// The transmitted buffer, handed back to the core for reuse.
        buffer: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        error: Option<String>,
    },
    Shutdown,
}

struct ConnTasks {
    transmits: Sender<Vec<u8>>,
    /// Read buffers going back to the reader, so reads never allocate.
    spare_reads: Sender<Vec<u8>>,
    pending_spares: Option<Receiver<Vec<u8>>>,
    /// The writer's queue until the socket exists.
    pending_writer: Option<Receiver<Vec<u8>>>,
    stop_read: Stop,
    stop_write: Stop,
    /// Shut while the core wants no more input from this connection.
    reading: Gate,
}

impl ConnTasks {
    fn new(stop_read: Stop) -> ConnTasks {
        let (transmits, writer) = async_channel::unbounded();
        let (spare_reads, spares) = async_channel::bounded(EVENT_BACKLOG + 2);
        ConnTasks {
            transmits,
            spare_reads,
            pending_spares: Some(spares),
            pending_writer: Some(writer),
            stop_read,
            stop_write: Stop::default(),
            reading: Gate::default(),
        }
    }
}

pub(crate) struct Driver<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) core: Core,
    pub(crate) events: Receiver<DriverEvent<R>>,
    pub(crate) events_tx: Sender<DriverEvent<R>>,
    /// Every task holds a clone; all dropped means all tasks are gone.
    pub(crate) task_guard: Option<Sender<()>>,
    pub(crate) tasks_done: Receiver<()>,
    pub(crate) stop_accept: Stop,
    conns: BTreeMap<ConnId, ConnTasks>,
    /// Writers of closed connections, stopped if still flushing at the deadline.
    closing: Vec<(Instant, Stop)>,
    shutdown_deadline: Option<Instant>,
}

enum Wake<R: Runtime> {
    Event(DriverEvent<R>),
    Signal,
    Timer,
    TasksDone,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        rt: R,
        core: Core,
        events: Receiver<DriverEvent<R>>,
        events_tx: Sender<DriverEvent<R>>,
        task_guard: Sender<()>,
        tasks_done: Receiver<()>,
        stop_accept: Stop,
    ) -> Driver<R> {
        Driver {
            rt,
            core,
            events,
            events_tx,
            task_guard: Some(task_guard),
            tasks_done,
            stop_accept,
            conns: BTreeMap::new(),
            closing: Vec::new(),
            shutdown_deadline: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let wake = self.core.wake_signal();
        loop {
            let now = Instant::now();
            while let Ok(event) = self.events.try_recv() {
                self.handle(now, event);
            }
            self.pump(now);
            let deadline = self.next_deadline();
            let sleep = deadline.map(|d| self.rt.sleep_until(d));
            let mut sleep = std::pin::pin!(sleep);
            let recv = self.events.recv();
            let mut recv = std::pin::pin!(recv);
            let done = self.tasks_done.recv();
            let mut done = std::pin::pin!(done);
            let shutting_down = self.task_guard.is_none();
            let woke: Wake<R> = std::future::poll_fn(|cx| {
                if shutting_down {
                    if let Poll::Ready(Err(_)) = done.as_mut().poll(cx) {
                        return Poll::Ready(Wake::TasksDone);
                    }
                }
                if let Poll::Ready(Ok(event)) = recv.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Event(event));
                }
                if wake.poll_wait(cx).is_ready() {
                    return Poll::Ready(Wake::Signal);
                }
                if let Some(sleep) = sleep.as_mut().as_pin_mut() {
                    if sleep.poll(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                }
                Poll::Pending
            })
            .await;
            let now = Instant::now();
            match woke {
                Wake::Event(event) => self.handle(now, event),
                Wake::Signal => {}
                Wake::Timer => self.on_timer(now),
                Wake::TasksDone => break,
            }
        }
        tracing::debug!(node = self.core.id().0, "driver finished");
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.core.poll_timeout(),
            self.closing.iter().map(|(t, _)| *t).min(),
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_input(now, Input::Timeout);
        }
        self.closing.retain(|(deadline, stop)| {
            if *deadline <= now {
                stop.stop();
                false
            } else {
                true
            }
        });
        if self.shutdown_deadline.is_some_and(|t| t <= now) {
            // Grace is over: stop whatever still runs.
            for tasks in self.conns.values() {
                tasks.stop_read.stop();
                tasks.stop_write.stop();
            }
            self.conns.clear();
            for (_, stop) in self.closing.drain(..) {
                stop.stop();
            }
            self.shutdown_deadline = None;
        }
    }

    fn handle(&mut self, now: Instant, event: DriverEvent<R>) {
        match event {
            DriverEvent::Accepted {
                reader,
                writer,
                label,
            } => match self.core.accept(now, &label) {
                Ok(conn) => {
                    self.conns.insert(conn, ConnTasks::new(Stop::default()));
                    self.start_io(conn, reader, writer);
                }
                Err(e) => {
                    tracing::warn!(node = self.core.id().0, from = label, error = %e, "connection refused");
                    drop((reader, writer));
                }
            },
            DriverEvent::Connected {
                conn,
                reader,
                writer,
            } => {
                if self.conns.contains_key(&conn) {
                    self.start_io(conn, reader, writer);
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
            DriverEvent::Received { conn, buffer, len } => {
                self.core.handle_input(
                    now,
                    Input::Received {
                        conn,
                        bytes: &buffer[..len],
                    },
                );
                if let Some(tasks) = self.conns.get(&conn) {
                    let _ = tasks.spare_reads.try_send(buffer);
                }
            }
            DriverEvent::Written { conn, buffer } => {
                let bytes = buffer.len();
                self.core.handle_input(now, Input::Written { conn, bytes });
                self.core.recycle(buffer);
            }
            DriverEvent::Closed { conn, error } => {
                if let Some(tasks) = self.conns.remove(&conn) {
                    tasks.stop_read.stop();
                    tasks.stop_write.stop();
                }
                self.core.handle_input(
                    now,
                    Input::Closed {
                        conn,
                        error: error.as_deref(),
                    },
                );
            }
            DriverEvent::Shutdown => {
                if self.task_guard.is_some() {
                    self.core.shutdown(now);
                    self.stop_accept.stop();
                    self.pump(now);
                    self.task_guard = None;
                    self.shutdown_deadline = Some(now + CLOSE_GRACE);
                }
            }
        }
    }

    /// Carries out everything the core wants done now.
    fn pump(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output(now) {
            match output {
                Output::Transmit { conn, data } => {
                    if let Some(tasks) = self.conns.get(&conn) {
                        let _ = tasks.transmits.try_send(data);
                    }
                }
                Output::Connect {
                    conn,
                    node,
                    address,
                    local_address,
                } => {
                    if local_address.is_some() {
                        tracing::debug!(
                            node = node.0,
                            "local_address is not supported; dialling from any address"
                        );
                    }
                    self.dial(conn, address);
                }
                Output::Close { conn } => {
                    if let Some(tasks) = self.conns.remove(&conn) {
                        // Dropping the queue's sender lets the writer flush
                        // what is queued (a goodbye, an alert) and close.
                        tasks.stop_read.stop();
                        self.closing.push((now + CLOSE_GRACE, tasks.stop_write));
                    }
                }
                Output::PauseReading { conn } => {
                    if let Some(tasks) = self.conns.get(&conn) {
                        tasks.reading.shut();
                    }
                }
                Output::ResumeReading { conn } => {
                    if let Some(tasks) = self.conns.get(&conn) {
                        tasks.reading.open();
                    }
                }
                Output::Event(event) => {
                    tracing::debug!(node = self.core.id().0, ?event, "core event");
                }
            }
        }
    }

    fn guard(&self) -> Option<Sender<()>> {
        self.task_guard.clone()
    }

    fn dial(&mut self, conn: ConnId, address: String) {
        let Some(guard) = self.guard() else {
            return;
        };
        let stop = Stop::default();
        self.conns.insert(conn, ConnTasks::new(stop.clone()));
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

    fn start_io(&mut self, conn: ConnId, mut reader: R::Reader, mut writer: R::Writer) {
        let Some(tasks) = self.conns.get_mut(&conn) else {
            return;
        };
        let (Some(transmits), Some(spares)) =
            (tasks.pending_writer.take(), tasks.pending_spares.take())
        else {
            return;
        };
        let (Some(read_guard), Some(write_guard)) =
            (self.task_guard.clone(), self.task_guard.clone())
        else {
            return;
        };
        let stop_read = tasks.stop_read.clone();
        let stop_write = tasks.stop_write.clone();
        let reading = tasks.reading.clone();
        let events = self.events_tx.clone();
        self.rt.spawn(async move {
            let _guard = read_guard;
            loop {
                // Buffers come back from the driver once read; a new one is
                // made only while earlier ones are still in flight.
                let mut buf = spares.try_recv().unwrap_or_else(|_| vec![0u8; READ_CHUNK]);
                if stop_read.guard(reading.opened()).await.is_none() {
                    return;
                }
                let event = match stop_read.guard(R::read(&mut reader, &mut buf)).await {
                    None => return,
                    Some(Ok(0)) => DriverEvent::Closed { conn, error: None },
                    Some(Ok(len)) => DriverEvent::Received {
                        conn,
                        buffer: buf,
                        len,
                    },
                    Some(Err(e)) => DriverEvent::Closed {
                        conn,
                        error: Some(e.to_string()),
                    },
                };
                let last = matches!(event, DriverEvent::Closed { .. });
                if stop_read.guard(events.send(event)).await.is_none() || last {
                    return;
                }
            }
        });
        let events = self.events_tx.clone();
        self.rt.spawn(async move {
            let _guard = write_guard;
            while let Ok(data) = transmits.recv().await {
                match stop_write.guard(R::write_all(&mut writer, &data)).await {
                    None => return,
                    Some(Ok(())) => {
                        let _ = events
                            .send(DriverEvent::Written { conn, buffer: data })
                            .await;
                    }
                    Some(Err(e)) => {
                        let _ = events
                            .send(DriverEvent::Closed {
                                conn,
                                error: Some(e.to_string()),
                            })
                            .await;
                        return;
                    }
                }
            }
            let _ = stop_write.guard(R::close(&mut writer)).await;
        });
    }
}
