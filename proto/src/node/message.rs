//! Dynamic messages, as in Erlang and Go reign: any serde type can be sent,
//! and the receiver tests and downcasts what it got.
//!
//! A local send moves the value into the target mailbox boxed as `dyn Any`
//! with no serialization. A message that crossed the wire stays as its CBOR
//! bytes (a zero-copy slice of the receive buffer) until the receiver asks
//! for a concrete type, so a mailbox that never looks at a message never pays
//! for decoding it.
//!
//! Raw bytes ([`Address::send_bytes`](crate::Address::send_bytes)) skip
//! serde on both ends: the payload on the wire is the bytes themselves,
//! under the built-in type [`RAW_BYTES_NAME`], and the receiver takes them
//! with [`Message::into_bytes`] as a slice of the receive buffer.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Weak;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec::payload;
use crate::error::DecodeError;
use crate::node::NodeInner;
use crate::types::{self, TypeTag};

/// The wire name of raw byte payloads, sent with
/// [`Address::send_bytes`](crate::Address::send_bytes): a message of this
/// type is its bytes, with no CBOR around them. Registered on every node
/// as the type [`Bytes`].
pub const RAW_BYTES_NAME: &str = "reign.raw";

/// The tag of [`RAW_BYTES_NAME`].
pub(crate) const RAW_BYTES_TAG: TypeTag = TypeTag::of_name(RAW_BYTES_NAME);

/// A message taken from a mailbox.
///
/// ```
/// use reign_proto::{Incarnation, Node};
///
/// let node = Node::local(Incarnation(1));
/// let (addr, mailbox) = node.new_mailbox();
/// addr.send(42u64).unwrap();
/// let msg = mailbox.try_recv().unwrap().unwrap();
/// assert!(msg.is::<u64>());
/// assert_eq!(msg.downcast::<u64>().unwrap(), 42);
/// ```
pub struct Message {
    body: Body,
    /// A message from another node holds a share of that node's receive
    /// budget until it is received and dropped (see `net::RecvBudget`).
    charge: Option<crate::node::outbox::Charge>,
}

enum Body {
    /// Sent on this node: the value itself.
    Local(Box<dyn Any + Send>),
    /// Received from another node: still encoded.
    Remote {
        tag: TypeTag,
        payload: Bytes,
        /// The receiving node, so that addresses inside the payload bind to
        /// it when the payload is decoded.
        node: Weak<NodeInner>,
    },
}

impl Message {
    /// Wraps a local value.
    pub(crate) fn local<T: Any + Send>(value: T) -> Message {
        Message {
            body: Body::Local(Box::new(value)),
            charge: None,
        }
    }

    /// Charges the message to its peer's receive budget.
    pub(crate) fn charged(mut self, charge: Option<crate::node::outbox::Charge>) -> Message {
        self.charge = charge;
        self
    }

    /// Wraps a payload received from the wire.
    pub(crate) fn remote(tag: TypeTag, payload: Bytes, node: Weak<NodeInner>) -> Message {
        Message {
            body: Body::Remote { tag, payload, node },
            charge: None,
        }
    }

    /// Whether this message holds a `T`.
    ///
    /// For a message from another node this compares wire type tags, so `T`
    /// must have been registered with [`register_type`](crate::register_type).
    pub fn is<T: Any>(&self) -> bool {
        match &self.body {
            Body::Local(value) => value.is::<T>(),
            Body::Remote { tag, .. } => types::tag_of(TypeId::of::<T>()) == Some(*tag),
        }
    }

    /// Takes the `T` out of the message, or gives the message back if it holds
    /// something else or its payload does not decode as a `T` (use
    /// [`try_downcast`](Message::try_downcast) to learn which).
    pub fn downcast<T: Any + DeserializeOwned>(self) -> Result<T, Message> {
        self.try_downcast().map_err(|e| e.message)
    }

    /// Like [`downcast`](Message::downcast), with the reason on failure.
    pub fn try_downcast<T: Any + DeserializeOwned>(self) -> Result<T, DowncastError> {
        let Message { body, charge } = self;
        let back = |body, reason| DowncastError {
            message: Message { body, charge },
            reason,
        };
        match body {
            Body::Local(value) => match value.downcast::<T>() {
                Ok(value) => Ok(*value),
                Err(value) => Err(back(Body::Local(value), None)),
            },
            Body::Remote { tag, payload, node } => {
                if types::tag_of(TypeId::of::<T>()) != Some(tag) {
                    return Err(back(Body::Remote { tag, payload, node }, None));
                }
                match crate::address::with_decode_context(&node, || payload::decode::<T>(&payload))
                {
                    Ok(value) => Ok(value),
                    Err(err) => {
                        tracing::warn!(
                            type_name = std::any::type_name::<T>(),
                            error = %err,
                            "a message from another node does not decode as its declared type"
                        );
                        Err(back(Body::Remote { tag, payload, node }, Some(err)))
                    }
                }
            }
        }
    }

    /// Takes a value that was sent on this node, whatever its type (requests
    /// and offered tunnels are such values); gives the message back if it
    /// holds something else or came encoded.
    pub fn take<T: Any>(self) -> Result<T, Message> {
        let Message { body, charge } = self;
        match body {
            Body::Local(value) => value.downcast::<T>().map(|v| *v).map_err(|value| Message {
                body: Body::Local(value),
                charge,
            }),
            body => Err(Message { body, charge }),
        }
    }

    /// Whether the message is raw bytes sent with
    /// [`Address::send_bytes`](crate::Address::send_bytes) (or
    /// [`send_bytes_batch`](crate::Address::send_bytes_batch)), from this
    /// node or another.
    pub fn is_bytes(&self) -> bool {
        match &self.body {
            Body::Local(value) => value.is::<Bytes>(),
            Body::Remote { tag, .. } => *tag == RAW_BYTES_TAG,
        }
    }

    /// Takes the bytes of a raw message (see [`is_bytes`](Message::is_bytes))
    /// with no decoding and no copy: a message from another node gives a
    /// slice of the buffer it was received in. Gives the message back if
    /// it holds something else.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use reign_proto::{Incarnation, Node};
    ///
    /// let node = Node::local(Incarnation(1));
    /// let (addr, mailbox) = node.new_mailbox();
    /// addr.send_bytes(Bytes::from_static(b"raw")).unwrap();
    /// let msg = mailbox.try_recv().unwrap().unwrap();
    /// assert!(msg.is_bytes());
    /// assert_eq!(msg.into_bytes().unwrap(), Bytes::from_static(b"raw"));
    /// ```
    pub fn into_bytes(self) -> Result<Bytes, Message> {
        let Message { body, charge } = self;
        match body {
            Body::Local(value) => value
                .downcast::<Bytes>()
                .map(|v| *v)
                .map_err(|value| Message {
                    body: Body::Local(value),
                    charge,
                }),
            Body::Remote { tag, payload, .. } if tag == RAW_BYTES_TAG => Ok(payload),
            body => Err(Message { body, charge }),
        }
    }

    /// A reference to the value, for a message sent on this node. Messages
    /// from other nodes are still encoded and give `None`; use
    /// [`downcast`](Message::downcast) for those.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match &self.body {
            Body::Local(value) => value.downcast_ref(),
            Body::Remote { .. } => None,
        }
    }

    /// Whether the message is still encoded: it came from another node, or
    /// it was broadcast or published (encoded once for every receiver).
    pub fn is_remote(&self) -> bool {
        matches!(self.body, Body::Remote { .. })
    }

    /// The registered wire name of the message's type, if known.
    pub fn type_name(&self) -> Option<&'static str> {
        match &self.body {
            Body::Local(value) => types::name_of((**value).type_id()),
            Body::Remote { tag, .. } => types::name_of_tag(*tag),
        }
    }

    /// Approximate bytes the message holds, for byte-bounded mailboxes: the
    /// payload length of a remote message, the in-memory size of a local one.
    pub fn byte_len(&self) -> usize {
        match &self.body {
            Body::Local(value) => match value.downcast_ref::<Bytes>() {
                Some(bytes) => bytes.len(),
                None => std::mem::size_of_val(&**value),
            },
            Body::Remote { payload, .. } => payload.len(),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = if self.is_remote() { "remote" } else { "local" };
        f.debug_struct("Message")
            .field("origin", &origin)
            .field("type", &self.type_name().unwrap_or("<unregistered>"))
            .finish()
    }
}

/// Why [`Message::try_downcast`] failed; holds the message so nothing is lost.
#[derive(Debug)]
pub struct DowncastError {
    /// The message, unchanged.
    pub message: Message,
    /// `None` if the message holds another type; the decoding error if it
    /// claims to hold the requested type but its payload is malformed.
    pub reason: Option<DecodeError>,
}

impl fmt::Display for DowncastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            None => write!(f, "the message holds another type"),
            Some(err) => write!(f, "the message payload is malformed: {err}"),
        }
    }
}

/// A malformed payload exposes its [`DecodeError`].
impl std::error::Error for DowncastError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.reason
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
