//! Typed errors of the local half: sending, receiving and decoding.
//!
//! Every public error type of reign follows the same conventions:
//!
//! - **It can grow.** The enums are `#[non_exhaustive]`: a new failure is a
//!   new variant in a minor release, so a `match` outside the crate ends
//!   with a `_` arm.
//! - **Causes are reachable.** An error that wraps another (a
//!   [`RequestError::Send`](crate::RequestError::Send), a `StartError::Bind`
//!   and its `io::Error`, …) returns it from
//!   [`source()`](std::error::Error::source), so error reporters and
//!   `downcast_ref` find it. Its `Display` still ends with the cause's text,
//!   because the logs print one error per line and must read whole; a
//!   reporter that walks the chain shows the cause again on its own line.
//! - **Texts** are lower case (acronyms such as TLS aside) with no trailing
//!   period, so they compose as `context: error`.

use std::fmt;
use std::path::PathBuf;

use crate::codec::DEFAULT_PROTOCOL;

/// Why [`Address::send`](crate::Address::send) failed. A send that returns
/// `Ok` is not a delivery guarantee (delivery is at most once, as in Erlang);
/// an error guarantees the message was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The target's node is connected but predates what was asked (it
    /// did not advertise the feature in its hello).
    Unsupported,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => write!(f, "the target mailbox is closed"),
            SendError::Unsupported => write!(f, "the target's node does not support this"),
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
#[non_exhaustive]
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
#[non_exhaustive]
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

/// Everything wrong a spec can be, each naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// The JSON does not parse, or a field has the wrong type.
    Json {
        /// What serde_json said, with line and column.
        message: String,
    },
    /// The spec file could not be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// `nodes` is empty.
    NoNodes,
    /// Two entries of `nodes` have the same `id`.
    DuplicateId {
        /// The repeated id.
        id: u16,
    },
    /// A node has an empty or malformed `address`.
    BadAddress {
        /// The node.
        id: u16,
        /// The field (`address`, `listen_address` or `local_address`).
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The node being started is not in `nodes`.
    NodeNotInSpec {
        /// The id asked for.
        id: u16,
    },
    /// Neither a `*_pem` nor a `*_path` is set for this material.
    Missing {
        /// The field pair, e.g. `node_cert_path/node_cert_pem`.
        field: &'static str,
    },
    /// A file named by a `*_path` field could not be read.
    FileUnreadable {
        /// The field.
        field: &'static str,
        /// The path after `%d` substitution.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// PEM text holds no usable certificate or key.
    BadPem {
        /// The field it came from.
        field: &'static str,
        /// What was wrong.
        error: String,
    },
    /// The node certificate is not signed by the cluster CA (or has expired).
    NotSignedByCluster {
        /// The node.
        id: u16,
        /// The verifier's reason.
        error: String,
    },
    /// The node certificate does not name the node it is configured for.
    CertificateNamesOtherNode {
        /// The node.
        id: u16,
    },
    /// rustls refused the TLS configuration built from the material.
    Tls {
        /// rustls' reason.
        error: String,
    },
    /// A key that no spec object has: a typo, which would otherwise leave
    /// the default in force without a word.
    UnknownField {
        /// The key as written.
        field: String,
        /// The object it was found in: `the spec`, `a node` or `tuning`.
        within: &'static str,
        /// Where it is in the text (1-based).
        line: usize,
        /// Its column (1-based).
        column: usize,
        /// The known key nearest to it, if one is close.
        suggestion: Option<String>,
    },
    /// `permitted_protocols` holds a TLS cipher-suite name, as Go reign's
    /// spec did; here the field lists ALPN protocol names.
    CipherSuiteAsProtocol {
        /// The value as written.
        value: String,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Json { message } => write!(f, "cluster spec JSON: {message}"),
            SpecError::Unreadable { path, error } => {
                write!(f, "cannot read cluster spec {}: {error}", path.display())
            }
            SpecError::NoNodes => write!(f, "cluster spec: `nodes` is empty"),
            SpecError::DuplicateId { id } => {
                write!(f, "cluster spec: `nodes` lists id {id} more than once")
            }
            SpecError::BadAddress { id, field, value } => write!(
                f,
                "cluster spec: node {id} has a bad `{field}` {value:?} (want host:port)"
            ),
            SpecError::NodeNotInSpec { id } => {
                write!(f, "cluster spec: node {id} is not listed in `nodes`")
            }
            SpecError::Missing { field } => write!(f, "cluster spec: `{field}` is not set"),
            SpecError::FileUnreadable { field, path, error } => write!(
                f,
                "cluster spec: cannot read `{field}` file {}: {error}",
                path.display()
            ),
            SpecError::BadPem { field, error } => {
                write!(f, "cluster spec: `{field}` holds no valid PEM: {error}")
            }
            SpecError::NotSignedByCluster { id, error } => write!(
                f,
                "cluster spec: the certificate of node {id} is not valid under the cluster CA: {error}"
            ),
            SpecError::CertificateNamesOtherNode { id } => write!(
                f,
                "cluster spec: the certificate configured for node {id} does not name node {id}"
            ),
            SpecError::Tls { error } => write!(f, "TLS configuration refused: {error}"),
            SpecError::UnknownField {
                field,
                within,
                line,
                column,
                suggestion,
            } => {
                write!(
                    f,
                    "cluster spec: unknown field `{field}` in {within} at line {line} column {column}"
                )?;
                match suggestion {
                    Some(known) => write!(f, ", did you mean `{known}`?"),
                    None => Ok(()),
                }
            }
            SpecError::CipherSuiteAsProtocol { value } => write!(
                f,
                "cluster spec: `permitted_protocols` lists ALPN protocol names (such as {DEFAULT_PROTOCOL:?}), \
                 not TLS cipher suites as in Go reign; remove {value:?} (rustls offers only secure suites)"
            ),
        }
    }
}

impl std::error::Error for SpecError {}

/// Why [`Address::send_bytes_batch`](crate::Address::send_bytes_batch)
/// stopped before the end of its batch: the first `sent` messages were
/// taken (as by [`Address::send_bytes`](crate::Address::send_bytes), so
/// `Ok`'s at-most-once promise holds for them) and none after them were;
/// resend `&batch[sent..]` to go on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchError {
    /// How many messages from the start of the batch were taken.
    pub sent: usize,
    /// Why the message at index `sent` was not.
    pub error: SendError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the batch stopped after {} messages: {}",
            self.sent, self.error
        )
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
