//! Addresses: the sending end of a mailbox, valid on any node.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{BatchError, SendError};
use crate::id::MailboxId;
use crate::node::mailbox::MailboxShared;
use crate::node::message::Message;
use crate::node::NodeInner;
use crate::system::{ExitReason, MailboxClosed};

/// Where sends to an address go. Resolved once, when the address is made or
/// deserialized, so a send never looks anything up.
#[derive(Clone)]
enum Destination {
    /// A mailbox of this node: sends push straight into its queue.
    Local(Arc<MailboxShared>),
    /// A mailbox of another node, reached through this node's connections.
    Remote(Weak<NodeInner>),
    /// A mailbox of this node that no longer exists, or one of an earlier
    /// incarnation of this node: sends fail with `Closed`. The node is
    /// kept to learn why the mailbox closed, while that is remembered.
    Gone(Weak<NodeInner>),
    /// Deserialized with no node to bind to.
    Unbound,
}

/// The address of a mailbox, on this node or any other.
///
/// Cheap to clone, compared and hashed by [`MailboxId`], and serialized as
/// that id: an address inside a message sent to another node works there,
/// and an address that comes back reaches the original mailbox.
///
/// ```
/// use reign_proto::{ExitReason, Incarnation, MailboxClosed, Node};
///
/// let node = Node::local(Incarnation(1));
/// let (target, target_box) = node.new_mailbox();
/// let (watcher, watcher_box) = node.new_mailbox();
/// target.on_close_notify(&watcher);
/// target_box.close();
/// let note = watcher_box.try_recv().unwrap().unwrap();
/// let note = note.downcast::<MailboxClosed>().unwrap();
/// assert_eq!((note.id, note.reason), (target.id(), ExitReason::Closed));
/// assert!(target.send(1u8).is_err());
/// ```
#[derive(Clone)]
pub struct Address {
    id: MailboxId,
    destination: Destination,
}

impl Address {
    pub(crate) fn local(shared: Arc<MailboxShared>) -> Address {
        Address {
            id: shared.id,
            destination: Destination::Local(shared),
        }
    }

    pub(crate) fn remote(id: MailboxId, node: Weak<NodeInner>) -> Address {
        Address {
            id,
            destination: Destination::Remote(node),
        }
    }

    pub(crate) fn gone(id: MailboxId, node: Weak<NodeInner>) -> Address {
        Address {
            id,
            destination: Destination::Gone(node),
        }
    }

    /// Why this local mailbox closed, as far as it is known (see
    /// `NodeInner::exit_reason_of`): its own reason, a recent one, else
    /// `NoMailbox`.
    fn late_reason(&self) -> ExitReason {
        match &self.destination {
            Destination::Local(mailbox) => mailbox.exit_reason().unwrap_or(ExitReason::NoMailbox),
            Destination::Gone(node) => node
                .upgrade()
                .map_or(ExitReason::NoMailbox, |node| node.exit_reason_of(self.id)),
            Destination::Remote(_) | Destination::Unbound => ExitReason::NoMailbox,
        }
    }

    /// The id of the mailbox this address reaches.
    pub fn id(&self) -> MailboxId {
        self.id
    }

    /// Whether the mailbox lives on the node this address is bound to.
    pub fn is_local(&self) -> bool {
        matches!(
            self.destination,
            Destination::Local(_) | Destination::Gone(_)
        )
    }

    /// Sends a message. Never blocks.
    ///
    /// `T` must be registered with [`register_type`](crate::register_type)
    /// (or be one of the built-in types: integers, `String`, `bool`, …),
    /// whether the mailbox is local or remote, so that a program tried on
    /// one node behaves the same in a cluster; an unregistered type fails
    /// with [`SendError::Unregistered`] naming it. A local send moves
    /// `value` into the mailbox. A remote send encodes it here, in the
    /// caller's thread, and queues the frame for the node's connection to
    /// the target's node. Delivery is at most once: `Ok` does not promise
    /// delivery (a send to a node that is down is dropped and counted), an
    /// error promises the message was not delivered.
    pub fn send<T: Any + Send + Serialize>(&self, value: T) -> Result<(), SendError> {
        match &self.destination {
            Destination::Local(mailbox) => {
                // One thread-local compare when a thread sends one type in a
                // row (see `types::tag_of`): the local path stays as fast.
                crate::types::tag_for::<T>()?;
                mailbox.push(Message::local(value))
            }
            Destination::Remote(node) => match node.upgrade() {
                Some(node) => node.send_remote(self.id, &value),
                None => Err(SendError::NodeShutdown),
            },
            Destination::Gone(_) => Err(SendError::Closed),
            Destination::Unbound => Err(SendError::Unbound),
        }
    }

    /// Sends raw bytes, skipping serde on both ends: a remote send copies
    /// `bytes` into the peer's queue behind a frame header (a large one,
    /// over [`FRAGMENT_LEN`](crate::codec::FRAGMENT_LEN), is queued as it
    /// is, with no copy, and leaves in fragments), and the receiver takes
    /// the same bytes with [`Message::into_bytes`] as a slice of its
    /// receive buffer. The message's type is the built-in
    /// [`RAW_BYTES_NAME`](crate::RAW_BYTES_NAME) ([`Message::is_bytes`]),
    /// so nothing needs registering. Never blocks; errors and delivery as
    /// [`send`](Address::send): a remote payload over the node's
    /// `max_message_len` is [`SendError::TooLarge`]; a local one moves
    /// into the mailbox as `send` does.
    pub fn send_bytes(&self, bytes: Bytes) -> Result<(), SendError> {
        match &self.destination {
            Destination::Local(mailbox) => mailbox.push(Message::local(bytes)),
            _ => self
                .send_bytes_batch(std::slice::from_ref(&bytes))
                .map_err(|e| e.error),
        }
    }

    /// Sends many raw messages (as [`send_bytes`](Address::send_bytes)) in
    /// order. To another node the whole batch is queued under one lock of
    /// the peer's queue with one wake-up of its connection, which is what
    /// a flood of small messages pays most for one by one. Stops at the
    /// first message that is not taken: [`BatchError`] says how many were
    /// (`batch[..sent]`, as if each was sent alone) and why the next was
    /// not; none after it were sent. Cloning a [`Bytes`] is a reference
    /// count, so a local batch costs no copy either. An empty batch sends
    /// nothing and is `Ok`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use reign_proto::{Incarnation, Node};
    ///
    /// let node = Node::local(Incarnation(1));
    /// let (addr, mailbox) = node.new_mailbox();
    /// let batch: Vec<Bytes> = (0u8..3).map(|i| Bytes::from(vec![i; 4])).collect();
    /// addr.send_bytes_batch(&batch).unwrap();
    /// for i in 0u8..3 {
    ///     let msg = mailbox.try_recv().unwrap().unwrap();
    ///     assert_eq!(msg.into_bytes().unwrap(), Bytes::from(vec![i; 4]));
    /// }
    /// ```
    pub fn send_bytes_batch(&self, batch: &[Bytes]) -> Result<(), BatchError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.destination {
            Destination::Local(mailbox) => {
                for (sent, bytes) in batch.iter().enumerate() {
                    mailbox
                        .push(Message::local(bytes.clone()))
                        .map_err(|error| BatchError { sent, error })?;
                }
                Ok(())
            }
            Destination::Remote(node) => match node.upgrade() {
                Some(node) => node.send_bytes_remote(self.id, batch),
                None => Err(BatchError {
                    sent: 0,
                    error: SendError::NodeShutdown,
                }),
            },
            Destination::Gone(_) => Err(BatchError {
                sent: 0,
                error: SendError::Closed,
            }),
            Destination::Unbound => Err(BatchError {
                sent: 0,
                error: SendError::Unbound,
            }),
        }
    }

    /// Asks for [`MailboxClosed`] to be sent to `watcher` when this address's
    /// mailbox closes, or when its node becomes unreachable (Erlang's
    /// monitor; reign's `OnCloseNotify`), with the [`ExitReason`]. If the
    /// mailbox is already closed or gone, the notification is sent at once
    /// with the reason it closed for if that is still known (this handle
    /// holds the mailbox, or it is one of its node's last
    /// [`MAX_RECENT_EXITS`](crate::MAX_RECENT_EXITS) closes), else with
    /// [`ExitReason::NoMailbox`]; if its node is not connected, with
    /// [`ExitReason::Unreachable`]. Each watch fires once.
    pub fn on_close_notify(&self, watcher: &Address) {
        match &self.destination {
            Destination::Local(mailbox) => {
                if !mailbox.add_watcher(watcher) {
                    watcher.deliver_close(self.id, &self.late_reason());
                }
            }
            Destination::Remote(node) => match node.upgrade() {
                Some(node) => node.watch_remote(self.id, watcher),
                None => {
                    watcher.deliver_close(self.id, &ExitReason::NodeShutdown);
                }
            },
            Destination::Gone(_) | Destination::Unbound => {
                watcher.deliver_close(self.id, &self.late_reason());
            }
        }
    }

    /// Closes this address's mailbox with [`ExitReason::Killed`], on this
    /// node or another: a spawned task's future is dropped at once (a task
    /// stuck in an `.await` that never completes is ended this way), its
    /// watchers hear `Killed`, and linked mailboxes exit too. Kills cannot
    /// be trapped. Killing a closed mailbox does nothing.
    ///
    /// Fails with [`SendError::Unbound`] for an unbound address,
    /// [`SendError::NodeShutdown`] when this node is gone, and
    /// [`SendError::Unsupported`] when the mailbox's node is connected but
    /// predates kills; a kill to a node that is down is dropped (its
    /// mailboxes are unreachable anyway) and `Ok`.
    pub fn kill(&self) -> Result<(), SendError> {
        match &self.destination {
            Destination::Local(mailbox) => {
                mailbox.close_and_notify(ExitReason::Killed);
                Ok(())
            }
            Destination::Remote(node) => match node.upgrade() {
                Some(node) => node.kill_remote(self.id),
                None => Err(SendError::NodeShutdown),
            },
            Destination::Gone(_) => Ok(()),
            Destination::Unbound => Err(SendError::Unbound),
        }
    }

    /// Tells this address's mailbox that `target` closed for `reason`: an
    /// exit signal if it is linked to `target` (see
    /// [`Mailbox::link`](crate::Mailbox::link)), else a [`MailboxClosed`]
    /// message. Whether anything was delivered.
    pub(crate) fn deliver_close(&self, target: MailboxId, reason: &ExitReason) -> bool {
        if let Destination::Local(mailbox) = &self.destination {
            if mailbox.take_link(target) {
                return mailbox.exit_signal(target, reason);
            }
        }
        self.send(MailboxClosed {
            id: target,
            reason: reason.clone(),
        })
        .is_ok()
    }

    /// The other half of [`Mailbox::link`](crate::Mailbox::link): `me`
    /// (local, already linked on its side) links to this address's
    /// mailbox.
    pub(crate) fn link_from(&self, me: &Address) {
        match &self.destination {
            Destination::Local(other) => {
                if !other.add_link(me.id) {
                    me.deliver_close(self.id, &self.late_reason());
                    return;
                }
                self.on_close_notify(me);
                me.on_close_notify(self);
            }
            Destination::Remote(node) => match node.upgrade() {
                Some(node) => node.link_remote(me, self.id),
                None => {
                    me.deliver_close(self.id, &ExitReason::NodeShutdown);
                }
            },
            Destination::Gone(_) | Destination::Unbound => {
                me.deliver_close(self.id, &self.late_reason());
            }
        }
    }

    /// The other half of [`Mailbox::unlink`](crate::Mailbox::unlink).
    pub(crate) fn unlink_from(&self, me: &Address) {
        match &self.destination {
            Destination::Local(other) => {
                other.take_link(me.id);
                self.remove_notify(me);
                me.remove_notify(self);
            }
            Destination::Remote(node) => {
                if let Some(node) = node.upgrade() {
                    node.unlink_remote(me, self.id);
                }
            }
            Destination::Gone(_) | Destination::Unbound => {}
        }
    }

    /// Cancels an [`on_close_notify`](Address::on_close_notify) watch.
    pub fn remove_notify(&self, watcher: &Address) {
        match &self.destination {
            Destination::Local(mailbox) => mailbox.remove_watcher(watcher),
            Destination::Remote(node) => {
                if let Some(node) = node.upgrade() {
                    node.unwatch_remote(self.id, watcher);
                }
            }
            Destination::Gone(_) | Destination::Unbound => {}
        }
    }
}

impl PartialEq for Address {
    fn eq(&self, other: &Address) -> bool {
        self.id == other.id
    }
}

impl Eq for Address {}

impl Hash for Address {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Address {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.destination {
            Destination::Local(_) => "local",
            Destination::Remote(_) => "remote",
            Destination::Gone(_) => "gone",
            Destination::Unbound => "unbound",
        };
        write!(f, "Address({:?}, {kind})", self.id)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.id.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        MailboxId::deserialize(deserializer).map(Address::bound_here)
    }
}

impl Address {
    /// The address of `id`, bound to the node of the decode context on this
    /// thread (a received message, or [`Node::bind_scope`](crate::Node::bind_scope)),
    /// or unbound outside one.
    fn bound_here(id: MailboxId) -> Address {
        DECODE_NODE.with(
            |current| match current.borrow().as_ref().and_then(Weak::upgrade) {
                Some(node) => node.bind(id),
                None => Address {
                    id,
                    destination: Destination::Unbound,
                },
            },
        )
    }
}

/// Parses the text form `<node.incarnation.serial>` that `Display` on the
/// address's [`id`](Address::id) prints (Go reign's `UnmarshalText`). Like
/// deserializing, the address binds to the node of the current
/// [`Node::bind_scope`](crate::Node::bind_scope); outside one it is unbound
/// (sends fail with [`SendError::Unbound`]), and
/// [`Node::address_of`](crate::Node::address_of) binds a parsed id.
///
/// ```
/// use reign_proto::{Address, Incarnation, Node};
///
/// let node = Node::local(Incarnation(1));
/// let (addr, mailbox) = node.new_mailbox();
/// let text = addr.id().to_string();
/// let again: Address = node.bind_scope(|| text.parse()).unwrap();
/// again.send(5u32).unwrap();
/// assert_eq!(mailbox.try_recv().unwrap().unwrap().downcast::<u32>().unwrap(), 5);
/// assert!("<1.2>".parse::<Address>().is_err());
/// ```
impl std::str::FromStr for Address {
    type Err = crate::id::ParseIdError;

    fn from_str(text: &str) -> Result<Address, Self::Err> {
        text.parse().map(Address::bound_here)
    }
}

thread_local! {
    /// The node that addresses being deserialized on this thread bind to.
    static DECODE_NODE: RefCell<Option<Weak<NodeInner>>> = const { RefCell::new(None) };
}

/// Runs `f` with addresses deserialized on this thread binding to `node`.
/// Nests, and restores the previous binding even if `f` panics.
pub(crate) fn with_decode_context<R>(node: &Weak<NodeInner>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Weak<NodeInner>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            DECODE_NODE.with(|current| *current.borrow_mut() = previous);
        }
    }
    let previous = DECODE_NODE.with(|current| current.replace(Some(node.clone())));
    let _restore = Restore(previous);
    f()
}
