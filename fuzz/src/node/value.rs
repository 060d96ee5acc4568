//! The values the `node` target sends: one of the registered types, and
//! `with_value!`, which runs code on the value inside whatever its type.
//! Used by the harness (local sends) and by the wire encoding (frames).

use reign_proto::codec::payload;
use reign_proto::system::MailboxClosed;
use reign_proto::{Address, TypeTag};

/// A value of one of the registered types the harness sends.
pub(super) enum Value {
    U64(u64),
    Text(String),
    Bytes(serde_bytes::ByteBuf),
    Address(Address),
    Closed(MailboxClosed),
}

/// Runs `$body` with `$x` bound to the value inside, whatever its type.
macro_rules! with_value {
    ($v:expr, |$x:ident| $body:expr) => {
        match $v {
            Value::U64($x) => $body,
            Value::Text($x) => $body,
            Value::Bytes($x) => $body,
            Value::Address($x) => $body,
            Value::Closed($x) => $body,
        }
    };
}
pub(super) use with_value;

impl Value {
    /// The value's type tag and payload bytes.
    pub(super) fn encode(&self) -> (TypeTag, Vec<u8>) {
        let name = match self {
            Value::U64(_) => "u64",
            Value::Text(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Address(_) => "reign.Address",
            Value::Closed(_) => "reign.MailboxClosed",
        };
        (
            TypeTag::of_name(name),
            with_value!(self, |x| payload::to_vec(x)),
        )
    }
}
