//! The typed layer: optional compile-time types over the dynamic core.
//!
//! Messages are dynamic, as in Go reign: any registered type goes to any
//! address, and the receiver asks what it got ([`Message::is`],
//! [`Message::downcast`]). That is what lets one mailbox take requests,
//! close notices and exits side by side. Most conversations carry one type
//! each way, though, and for them this module lets the compiler check it:
//!
//! - [`TypedAddress<T>`] sends only `T`; [`TypedMailbox<T>`] receives only
//!   `T` (other messages stay queued for the untyped [`Mailbox`]
//!   underneath). [`Node::new_typed_mailbox`](crate::Node::new_typed_mailbox)
//!   makes the pair.
//! - A request type declares its reply type once ([`Call`]); the caller's
//!   `call` returns that type, and the member's [`TypedResponder`] accepts
//!   only that type.
//!
//! Nothing here is a second mechanism: a typed address *is* an address
//! (it travels in messages like one and converts both ways for free), a
//! call *is* a request. Every typed value hands out its dynamic self, so
//! the two styles mix in one program, one mailbox even.
//!
//! A wrong type is a compile error:
//!
//! ```compile_fail
//! use reign_proto::{Incarnation, Node};
//!
//! let node = Node::local(Incarnation(1));
//! let (counter, _mailbox) = node.new_typed_mailbox::<u64>();
//! counter.send(String::from("seven")); // expected `u64`, found `String`
//! ```
//!
//! ```compile_fail
//! use reign_proto::typed::Call;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Get(String);
//! impl Call for Get {
//!     type Reply = Option<u64>;
//! }
//!
//! fn answer(responder: reign_proto::typed::TypedResponder<Get>) {
//!     responder.reply(String::from("not an Option<u64>")); // a compile error
//! }
//! ```
//!
//! And the same with the right types:
//!
//! ```
//! use reign_proto::{Incarnation, Node};
//!
//! # futures_lite::future::block_on(async {
//! let node = Node::local(Incarnation(1));
//! let (counter, mailbox) = node.new_typed_mailbox::<u64>();
//! counter.send(7).unwrap();
//! counter.address().send("dynamic".to_string()).unwrap(); // the untyped address
//! assert_eq!(mailbox.recv().await.unwrap(), 7);
//! // The String waits in the untyped mailbox underneath.
//! assert_eq!(mailbox.untyped().message_count(), 1);
//! # });
//! ```

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{RecvError, SendError};
use crate::id::MailboxId;
use crate::node::address::Address;
use crate::node::mailbox::Mailbox;
use crate::node::message::Message;
use crate::node::services::{Request, RequestError, Responder};

/// A message type that can cross the wire and be named at compile time:
/// what every typed wrapper here requires of its `T`.
pub trait Payload: Any + Send + Serialize + DeserializeOwned {}

impl<T: Any + Send + Serialize + DeserializeOwned> Payload for T {}

/// An [`Address`] that accepts only `T`. It serializes as the address it
/// wraps, so it can be sent inside messages; the receiver decides its type.
pub struct TypedAddress<T> {
    address: Address,
    /// `fn(T)`: the address consumes `T`s, and is `Send`/`Sync` whatever `T` is.
    _type: PhantomData<fn(T)>,
}

impl<T: Payload> TypedAddress<T> {
    /// Claims that `address` takes `T`. Nothing is checked (the mailbox
    /// may take anything): this is where a dynamic address enters the typed
    /// layer.
    pub fn new(address: Address) -> TypedAddress<T> {
        TypedAddress {
            address,
            _type: PhantomData,
        }
    }

    /// Sends a `T` (see [`Address::send`]).
    pub fn send(&self, value: T) -> Result<(), SendError> {
        self.address.send(value)
    }
}

impl<T> TypedAddress<T> {
    /// The untyped address: the same mailbox, any message.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The untyped address, by value.
    pub fn into_address(self) -> Address {
        self.address
    }

    /// The mailbox's cluster-wide id.
    pub fn id(&self) -> MailboxId {
        self.address.id()
    }
}

impl<T> Clone for TypedAddress<T> {
    fn clone(&self) -> Self {
        TypedAddress {
            address: self.address.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for TypedAddress<T> {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address
    }
}

impl<T> Eq for TypedAddress<T> {}

impl<T> fmt::Debug for TypedAddress<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypedAddress<{}>({:?})",
            std::any::type_name::<T>(),
            self.address
        )
    }
}

impl<T> From<TypedAddress<T>> for Address {
    fn from(typed: TypedAddress<T>) -> Address {
        typed.address
    }
}

impl<'a, T> From<&'a TypedAddress<T>> for crate::services::Target<'a> {
    fn from(typed: &'a TypedAddress<T>) -> crate::services::Target<'a> {
        crate::services::Target::from(&typed.address)
    }
}

impl<T> Serialize for TypedAddress<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.address.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for TypedAddress<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(TypedAddress {
            address: Address::deserialize(deserializer)?,
            _type: PhantomData,
        })
    }
}

/// A [`Mailbox`] read as a stream of `T`s: [`recv`](TypedMailbox::recv)
/// takes the first `T` and leaves other messages queued, in order, for
/// [`untyped`](TypedMailbox::untyped). Dropping it closes the mailbox, as
/// dropping the mailbox does.
pub struct TypedMailbox<T> {
    mailbox: Mailbox,
    _type: PhantomData<fn() -> T>,
}

impl<T: Payload> TypedMailbox<T> {
    /// Reads `mailbox` as a mailbox of `T`s.
    pub fn new(mailbox: Mailbox) -> TypedMailbox<T> {
        TypedMailbox {
            mailbox,
            _type: PhantomData,
        }
    }

    /// Waits for the first `T` (see [`Mailbox::recv_type`]); cancel-safe.
    pub async fn recv(&self) -> Result<T, RecvError> {
        self.mailbox.recv_type::<T>().await
    }

    /// A typed address of this mailbox.
    pub fn address(&self) -> TypedAddress<T> {
        TypedAddress::new(self.mailbox.address())
    }
}

impl<T> TypedMailbox<T> {
    /// The mailbox underneath, for every other message and operation
    /// (close notices, links, tunnels, requests).
    pub fn untyped(&self) -> &Mailbox {
        &self.mailbox
    }

    /// The mailbox underneath, by value.
    pub fn into_untyped(self) -> Mailbox {
        self.mailbox
    }
}

impl<T> fmt::Debug for TypedMailbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypedMailbox<{}>({:?})",
            std::any::type_name::<T>(),
            self.mailbox
        )
    }
}

/// A request type and the reply type that goes with it, declared once:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Get(String);
///
/// impl reign_proto::typed::Call for Get {
///     type Reply = Option<u64>;
/// }
/// ```
///
/// Callers then get a `Get::Reply` back from the runtime adapters' `call`
/// (or [`Node::call`](crate::Node::call) with a deadline), and the member
/// answers through a [`TypedResponder<Get>`] that takes only `Option<u64>`.
/// Both types must be registered like any message type.
pub trait Call: Payload {
    /// What the member answers.
    type Reply: Payload;
}

/// Answers one typed request with its [`Call::Reply`] type only.
pub struct TypedResponder<Q: Call> {
    responder: Responder,
    _type: PhantomData<fn(Q::Reply)>,
}

impl<Q: Call> TypedResponder<Q> {
    /// Answers with the reply.
    pub fn reply(self, reply: Q::Reply) -> Result<(), SendError> {
        self.responder.reply(reply)
    }

    /// Answers with an application error
    /// ([`RequestError::Remote`] at the caller).
    pub fn reply_error(self, error: impl Into<String>) -> Result<(), SendError> {
        self.responder.reply_error(error)
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.responder.deadline()
    }

    /// How long the caller still waits; zero once it has given up.
    pub fn time_remaining(&self) -> Duration {
        self.responder.time_remaining()
    }

    /// The untyped responder.
    pub fn into_untyped(self) -> Responder {
        self.responder
    }
}

impl<Q: Call> fmt::Debug for TypedResponder<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypedResponder<{}>", std::any::type_name::<Q>())
    }
}

impl Request {
    /// This request as a `Q` with a responder that takes only `Q::Reply`;
    /// the request back, untouched, if it holds another type (or claims to
    /// hold a `Q` and does not decode).
    pub fn into_call<Q: Call>(self) -> Result<(Q, TypedResponder<Q>), Request> {
        if !self.message().is::<Q>() {
            return Err(self);
        }
        let (message, responder) = self.into_parts();
        match message.try_downcast::<Q>() {
            Ok(value) => Ok((
                value,
                TypedResponder {
                    responder,
                    _type: PhantomData,
                },
            )),
            // Claims to be a Q but does not decode: the request, back.
            Err(e) => Err(Request::from_parts(e.message, responder)),
        }
    }
}

/// Turns the reply of a typed request into its `R`.
pub fn reply_as<R: Payload>(reply: Message) -> Result<R, RequestError> {
    reply
        .try_downcast::<R>()
        .map_err(|e| RequestError::UnexpectedReply {
            expected: std::any::type_name::<R>(),
            found: e.message.type_name().unwrap_or("an unregistered type"),
        })
}
