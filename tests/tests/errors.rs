//! Every public error type: its `Display` follows the ecosystem's
//! conventions (lower case, no trailing period) and every error that wraps
//! another hands it out through `source()`. Real failures where a real one
//! is cheap (a busy port, a bad PEM, a bad id), constructed values otherwise.

use std::error::Error;
use std::time::Duration;

use reign_driver::admin::{self, AdminError, AdminOptions};
use reign_driver::StartError;
use reign_proto::certgen::{CaError, ClusterCa};
use reign_proto::codec::{FrameDecoder, FrameError};
use reign_proto::core::AcceptError;
use reign_proto::handshake::HandshakeError;
use reign_proto::registry::PeerError;
use reign_proto::{
    CloseReason, DecodeError, Incarnation, MailboxId, Message, Node, NodeId, ParseIdError,
    RecvError, RegistryError, ReloadError, RequestError, SendError, SpecError, TunnelError,
    TypeError,
};
use reign_tests::{free_ports, tokio_block_on, TestCluster};

/// The text convention: starts in lower case (an all-capital acronym such as
/// TLS or CBOR is allowed), does not end with a period, is not empty.
fn check_text(error: &dyn Error) -> String {
    let text = error.to_string();
    assert!(!text.is_empty(), "{error:?} displays as nothing");
    let first_word: String = text.chars().take_while(|c| c.is_alphanumeric()).collect();
    let acronym = first_word.len() > 1 && first_word.chars().all(|c| !c.is_lowercase());
    let first = text.chars().next().expect("not empty");
    assert!(
        !first.is_uppercase() || acronym,
        "{text:?} starts with a capital"
    );
    assert!(!text.ends_with('.'), "{text:?} ends with a period");
    text
}

/// `error.source()` is an `S` equal to `expected`.
fn check_source<S: Error + PartialEq + 'static>(error: &dyn Error, expected: &S) {
    let source = error
        .source()
        .unwrap_or_else(|| panic!("{error:?} has no source"));
    let inner = source.downcast_ref::<S>().unwrap_or_else(|| {
        panic!(
            "the source of {error:?} is not a {}",
            std::any::type_name::<S>()
        )
    });
    assert_eq!(inner, expected);
}

#[test]
fn send_error() {
    for e in [
        SendError::Closed,
        SendError::Full,
        SendError::Unregistered { type_name: "T" },
        SendError::Encode("bad".into()),
        SendError::TooLarge { len: 2, max: 1 },
        SendError::Unbound,
        SendError::NodeShutdown,
        SendError::Unsupported,
    ] {
        check_text(&e);
        assert!(e.source().is_none(), "{e:?} wraps nothing");
    }
}

#[test]
fn recv_error() {
    for e in [RecvError::Closed, RecvError::Timeout] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn decode_error() {
    for e in [
        DecodeError::Cbor("eof".into()),
        DecodeError::UnknownType(7),
        DecodeError::TrailingBytes(3),
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn downcast_error_exposes_its_decode_error() {
    // Another type: no source.
    let node = Node::local(Incarnation(1));
    let (addr, mailbox) = node.new_mailbox();
    addr.send(String::from("text")).unwrap();
    let message: Message = mailbox.try_recv().unwrap().expect("queued");
    let other = message
        .try_downcast::<u64>()
        .expect_err("a String is not a u64");
    assert_eq!(check_text(&other), "the message holds another type");
    assert!(other.source().is_none());
    // A malformed payload: the DecodeError is the source.
    let broken = reign_proto::message::DowncastError {
        message: other.message,
        reason: Some(DecodeError::TrailingBytes(1)),
    };
    check_text(&broken);
    check_source(&broken, &DecodeError::TrailingBytes(1));
}

#[test]
fn spec_error() {
    let missing = reign_proto::ClusterSpec::load("/nonexistent/reign/cluster.json")
        .expect_err("no such file");
    assert!(matches!(missing, SpecError::Unreadable { .. }));
    check_text(&missing);
    let json = reign_proto::ClusterSpec::from_json("{").expect_err("not JSON");
    check_text(&json);
    for e in [
        SpecError::NoNodes,
        SpecError::DuplicateId { id: 1 },
        SpecError::Tls { error: "x".into() },
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn frame_error() {
    let mut decoder = FrameDecoder::new(16);
    decoder.feed(&1000u32.to_le_bytes());
    let e = decoder.next_frame().expect_err("over the maximum");
    assert!(matches!(e, FrameError::TooLarge { .. }));
    check_text(&e);
    for e in [FrameError::Empty, FrameError::UnknownKind(255)] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn request_error_exposes_its_send_error() {
    let e = RequestError::Send(SendError::Full);
    assert_eq!(
        check_text(&e),
        "the request could not be sent: a bounded queue to the target is full"
    );
    check_source(&e, &SendError::Full);
    // A request from a node that shuts down is Closed, not a wrapped send.
    assert_eq!(
        RequestError::from(SendError::NodeShutdown),
        RequestError::Closed
    );
    for e in [
        RequestError::NoMember,
        RequestError::Refused("busy".into()),
        RequestError::Timeout,
        RequestError::Remote("no".into()),
        RequestError::Abandoned,
        RequestError::Unreachable,
        RequestError::Closed,
    ] {
        check_text(&e);
        assert!(e.source().is_none(), "{e:?} wraps nothing");
    }
}

#[test]
fn tunnel_error_exposes_its_send_error() {
    let e = TunnelError::Send(SendError::NodeShutdown);
    check_text(&e);
    check_source(&e, &SendError::NodeShutdown);
    for e in [
        TunnelError::Closed,
        TunnelError::Remote("x".into()),
        TunnelError::Timeout,
        TunnelError::NoMember,
        TunnelError::Unreachable,
        TunnelError::Protocol("x".into()),
        TunnelError::TooLarge { len: 2, max: 1 },
    ] {
        check_text(&e);
        assert!(e.source().is_none(), "{e:?} wraps nothing");
    }
}

#[test]
fn parse_id_error() {
    for text in ["", "1.2.3", "<1.2>", "<x.2.3>", "<1.zz.3>", "<1.2.-3>"] {
        let e = text.parse::<MailboxId>().expect_err("not an id");
        check_text(&e);
        assert!(e.source().is_none());
    }
    let e = "<1.2>".parse::<MailboxId>().expect_err("two parts");
    assert_eq!(e, ParseIdError::Parts { found: 2 });
}

#[test]
fn handshake_error() {
    for e in [
        HandshakeError::VersionMismatch { ours: 1, theirs: 2 },
        HandshakeError::WrongCluster,
        HandshakeError::WrongNode {
            expected: NodeId(1),
            claimed: NodeId(2),
        },
        HandshakeError::UnknownNode { claimed: NodeId(3) },
        HandshakeError::Malformed("x".into()),
        HandshakeError::RefusedByPeer("x".into()),
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn close_reason_exposes_its_handshake_error() {
    let e = CloseReason::Handshake(HandshakeError::WrongCluster);
    check_text(&e);
    check_source(&e, &HandshakeError::WrongCluster);
    for e in [
        CloseReason::ClosedByPeer,
        CloseReason::Tls("bad record".into()),
        CloseReason::ReadTimeout(Duration::from_secs(1)),
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn registry_errors() {
    let node = Node::local(Incarnation(1));
    let (addr, mailbox) = node.new_mailbox();
    let e = node.leave("nobody-here", &addr).expect_err("not a member");
    assert!(matches!(e, RegistryError::NotMember { .. }));
    check_text(&e);
    drop(mailbox);
    let e = node.register("gone", &addr).expect_err("a closed mailbox");
    check_text(&e);
    assert!(e.source().is_none());
    for e in [
        PeerError::Rejected("x".into()),
        PeerError::OverLimit("y".into()),
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn type_error() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct A;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct B;
    reign_proto::register_type_named::<A>("errors.A").expect("first name");
    let e = reign_proto::register_type_named::<A>("errors.A2").expect_err("renamed");
    assert!(matches!(e, TypeError::AlreadyNamed { .. }));
    check_text(&e);
    let e = reign_proto::register_type_named::<B>("errors.A").expect_err("taken");
    assert!(matches!(e, TypeError::NameTaken { .. }));
    check_text(&e);
    assert!(e.source().is_none());
}

#[test]
fn reload_error_exposes_its_spec_error() {
    let e = ReloadError::from(SpecError::NoNodes);
    check_text(&e);
    check_source(&e, &SpecError::NoNodes);
    for e in [
        ReloadError::OtherNode {
            ours: NodeId(0),
            theirs: NodeId(1),
        },
        ReloadError::OtherCluster,
        ReloadError::ShuttingDown,
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn accept_error() {
    for e in [
        AcceptError::TooManyHandshakes { limit: 1 },
        AcceptError::TooManyFromAddress {
            address: "127.0.0.1".into(),
            limit: 1,
        },
        AcceptError::ShuttingDown,
        AcceptError::Tls("x".into()),
    ] {
        check_text(&e);
        assert!(e.source().is_none());
    }
}

#[test]
fn ca_error_exposes_the_rcgen_error() {
    let e = ClusterCa::from_pem("not a certificate", "not a key").expect_err("bad PEM");
    assert!(matches!(e, CaError::Key(_)));
    check_text(&e);
    let source = e.source().expect("the rcgen error is the source");
    assert!(e.to_string().ends_with(&source.to_string()));
    let other = ClusterCa::generate().expect("a CA");
    let mine = ClusterCa::generate().expect("a CA");
    let e = ClusterCa::from_pem(mine.cert_pem(), other.key_pem()).expect_err("mismatch");
    assert!(matches!(e, CaError::KeyMismatch));
    check_text(&e);
    assert!(e.source().is_none());
}

#[test]
fn start_error_exposes_the_os_error_and_the_spec_error() {
    tokio_block_on(async {
        // The listener's port is taken: Bind, with the io::Error as source.
        let cluster = TestCluster::new(1);
        let port: u16 = cluster
            .address(NodeId(0))
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let e = reign_tokio::Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .expect_err("the port is taken");
        assert!(matches!(e, StartError::Bind { .. }));
        check_text(&e);
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("an io::Error source");
        assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);

        // A node not in the spec: Spec, with the SpecError as source.
        let e = reign_tokio::Node::start(&cluster.spec(NodeId(0)), NodeId(9))
            .await
            .expect_err("node 9 is not in the spec");
        check_text(&e);
        check_source(&e, &SpecError::NodeNotInSpec { id: 9 });

        // The dev directory is a file: Dev, with the io::Error as source.
        let file = tempfile::NamedTempFile::new().expect("a file");
        let e = reign_tokio::Node::start_dev(file.path().join("sub"))
            .await
            .expect_err("a directory under a file");
        assert!(matches!(e, StartError::Dev { .. }));
        check_text(&e);
        assert!(e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some());
    });
}

#[test]
fn admin_error_exposes_its_registry_error() {
    let e = AdminError::Registry(RegistryError::CantRegister { reason: "closed" });
    check_text(&e);
    check_source(&e, &RegistryError::CantRegister { reason: "closed" });
    tokio_block_on(async {
        let cluster = TestCluster::new(1);
        let node = reign_tokio::Node::start(&cluster.spec(NodeId(0)), NodeId(0))
            .await
            .expect("start");
        let port = free_ports(1)[0];
        let public = format!("0.0.0.0:{port}").parse().unwrap();
        let e = admin::serve(&node, public, AdminOptions::default()).expect_err("not loopback");
        assert!(matches!(e, AdminError::NotLoopback(_)));
        check_text(&e);
        assert!(e.source().is_none());
        node.shutdown().await;
    });
}
