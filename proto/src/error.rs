//! Typed errors of the local half: sending, receiving and decoding.

use std::fmt;

/// Why [`Address::send`](crate::Address::send) failed. A send that returns
/// `Ok` is not a delivery guarantee (delivery is at most once, as in Erlang);
/// an error guarantees the message was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The target mailbox is closed, or the address names a mailbox of an
    /// earlier incarnation of its node.
    Closed,
    /// A bounded queue on the way is full: the target mailbox's capacity, or
    /// the outbound byte budget for the target's node.
    Full,
    /// The message type was not declared with
    /// [`register_type`](crate::register_type). The rule is the same for
    /// local and remote mailboxes, so a program behaves alike on one node
    /// and in a cluster.
    Unregistered {
        /// The Rust name of the type.
        type_name: &'static str,
    },
    /// The value failed to serialize.
    Encode(String),
    /// The encoded message is larger than the configured maximum message size.
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The address was deserialized with no node to bind to (outside a
    /// message received by a node and outside [`Node::bind_scope`](crate::Node::bind_scope)).
    Unbound,
    /// The node this address belongs to is shutting down (it may still be
    /// delivering what it accepted earlier) or has shut down: it accepts no
    /// new sends.
    NodeShutdown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => write!(f, "the target mailbox is closed"),
            SendError::Full => write!(f, "a bounded queue to the target is full"),
            SendError::Unregistered { type_name } => write!(
                f,
                "type {type_name} is not registered (call register_type::<{type_name}>() \
                 or register_type_named once at start)"
            ),
            SendError::Encode(e) => write!(f, "the message failed to serialize: {e}"),
            SendError::TooLarge { len, max } => {
                write!(f, "the message is {len} bytes, over the maximum of {max}")
            }
            SendError::Unbound => write!(f, "the address is not bound to a node"),
            SendError::NodeShutdown => {
                write!(f, "the node is shutting down and accepts no new sends")
            }
        }
    }
}

impl std::error::Error for SendError {}

impl SendError {
    /// The error for a send of the unregistered type `T`.
    pub(crate) fn unregistered<T: ?Sized>() -> SendError {
        SendError::Unregistered {
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// Why a receive returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The mailbox is closed; no message will ever arrive.
    Closed,
    /// The timeout passed with no (matching) message.
    Timeout,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => write!(f, "the mailbox is closed"),
            RecvError::Timeout => write!(f, "no message arrived in time"),
        }
    }
}

impl std::error::Error for RecvError {}

/// A payload or control body that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The CBOR is malformed, too deeply nested, or of the wrong shape.
    Cbor(String),
    /// The wire type tag is not registered on this node.
    UnknownType(u64),
    /// Bytes were left over after the value.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Cbor(e) => write!(f, "malformed CBOR: {e}"),
            DecodeError::UnknownType(tag) => write!(f, "unregistered message type tag {tag:#018x}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes left over after the value"),
        }
    }
}

impl std::error::Error for DecodeError {}
