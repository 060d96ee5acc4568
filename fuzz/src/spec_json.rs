//! `spec_json`: arbitrary text as a cluster spec.
//!
//! Checks:
//! - [`ClusterSpec::from_json`] gives a spec or a typed `Json` error, or an
//!   `UnknownField` naming a key that really is unknown (and, if it suggests
//!   one, a known key), and a spec survives `to_json` → `from_json`
//!   unchanged;
//! - `validate_nodes` gives a node table consistent with the spec or a typed
//!   error, and `resolve` fails with that same error;
//! - with the PEM fields junk and the paths pointing at nothing, `resolve`
//!   is a typed error naming the material;
//! - with real material for one of the nodes, a spec whose nodes validate
//!   resolves, and a node core starts from it (or refuses its TLS settings
//!   with a typed error) and runs its timers without panicking, whatever
//!   the `tuning` says.

use std::time::Instant;

use reign_proto::spec::{ClusterSpec, SpecError};
use reign_proto::{Core, CoreConfig, Incarnation, Input, NodeId};

use crate::alloc_meter::peak_during;
use crate::certs;

fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A path that names nothing: the fuzzer's text, tamed, under a folder that
/// does not exist (no `/`, so it cannot climb out).
fn nowhere(path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    let tame: String = path
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '.' | '_' | '-'))
        .take(64)
        .collect();
    format!("/nonexistent/reign-fuzz/{tame}")
}

fn is_material_error(e: &SpecError) -> bool {
    matches!(
        e,
        SpecError::Missing { .. }
            | SpecError::FileUnreadable { .. }
            | SpecError::BadPem { .. }
            | SpecError::NotSignedByCluster { .. }
            | SpecError::CertificateNamesOtherNode { .. }
            | SpecError::Tls { .. }
            | SpecError::CipherSuiteAsProtocol { .. }
    )
}

/// The keys of the spec object an unknown field was found in (`within`),
/// as serialized: the field must be none of them, and a suggestion must be
/// one of them.
fn known_keys(within: &str) -> Vec<String> {
    let full = reign_proto::spec::ClusterSpec {
        nodes: vec![reign_proto::spec::NodeDescriptor {
            id: 0,
            address: "a:1".into(),
            listen_address: "a:1".into(),
            local_address: "a:1".into(),
        }],
        node_cert_path: "x".into(),
        node_key_path: "x".into(),
        cluster_cert_path: "x".into(),
        node_cert_pem: "x".into(),
        node_key_pem: "x".into(),
        cluster_cert_pem: "x".into(),
        permitted_protocols: vec!["x".into()],
        ..Default::default()
    };
    // Every key, tuning's included (`to_json` leaves out default tuning).
    let value = serde_json::to_value(&full).expect("a spec serializes");
    let object = match within {
        "a node" => &value["nodes"][0],
        "tuning" => &value["tuning"],
        _ => &value,
    };
    object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// Fuzzes the cluster spec parser and resolver with `data` (lossy UTF-8).
pub fn spec_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (parsed, peak) = peak_during(|| ClusterSpec::from_json(&text));
    assert!(
        peak <= (1 << 16) + 64 * text.len(),
        "parsing {} bytes of JSON allocated {peak} bytes at once",
        text.len()
    );
    let spec = match parsed {
        Ok(spec) => spec,
        Err(SpecError::Json { message }) => {
            assert!(!message.is_empty());
            return;
        }
        Err(e @ SpecError::UnknownField { .. }) => {
            let text = e.to_string();
            let SpecError::UnknownField {
                field,
                suggestion,
                within,
                ..
            } = e
            else {
                unreachable!()
            };
            let known = known_keys(within);
            assert!(
                !known.contains(&field),
                "{field:?} is a known key of {within}: {text}"
            );
            if let Some(s) = suggestion {
                assert!(known.contains(&s), "suggested {s:?}, not a key");
                assert!(text.contains(&s));
            }
            return;
        }
        Err(other) => panic!("from_json failed with a non-JSON error: {other:?}"),
    };
    assert_eq!(
        ClusterSpec::from_json(&spec.to_json()).as_ref(),
        Ok(&spec),
        "the spec does not survive to_json/from_json"
    );

    let validated = spec.validate_nodes();
    match &validated {
        Ok(nodes) => {
            assert_eq!(nodes.len(), spec.nodes.len());
            for node in &spec.nodes {
                assert_eq!(nodes.get(&NodeId(node.id)), Some(node));
                assert!(host_port(&node.address));
                assert!(node.listen_address.is_empty() || host_port(&node.listen_address));
                assert!(node.local_address.is_empty() || host_port(&node.local_address));
            }
        }
        Err(SpecError::NoNodes) => assert!(spec.nodes.is_empty()),
        Err(SpecError::DuplicateId { id }) => {
            assert!(spec.nodes.iter().filter(|n| n.id == *id).count() > 1)
        }
        Err(SpecError::BadAddress { id, .. }) => {
            assert!(spec.nodes.iter().any(|n| n.id == *id))
        }
        Err(other) => panic!("validate_nodes failed with {other:?}"),
    }
    let node = spec.nodes.first().map_or(NodeId(0), |n| NodeId(n.id));

    // Junk material, paths to nowhere.
    let mut junk = spec.clone();
    junk.base_dir = None;
    junk.node_cert_path = nowhere(&spec.node_cert_path);
    junk.node_key_path = nowhere(&spec.node_key_path);
    junk.cluster_cert_path = nowhere(&spec.cluster_cert_path);
    match (junk.resolve(node, certs::wall_time()), &validated) {
        (Err(e), Err(v)) => assert_eq!(&e, v, "resolve and validate_nodes disagree"),
        (Err(e), Ok(_)) => {
            assert!(is_material_error(&e), "resolve failed with {e:?}");
            assert!(!e.to_string().is_empty());
        }
        // Only if the input carried a whole valid CA and node certificate.
        (Ok(resolved), Ok(_)) => assert_eq!(resolved.node_id, node),
        (Ok(_), Err(v)) => panic!("resolve succeeded where validate_nodes said {v:?}"),
    }

    // Real material, for a node that has a certificate.
    if validated.is_err() || node.0 >= certs::NODES {
        return;
    }
    let material = certs::material();
    let pems = &material.nodes[node.0 as usize];
    let mut real = spec.clone();
    real.base_dir = None;
    real.node_cert_pem = pems.cert_pem.clone();
    real.node_key_pem = pems.key_pem.clone();
    real.cluster_cert_pem = material.ca_pem.clone();
    if let Err(e) = real.check_protocols() {
        assert_eq!(
            real.resolve(node, certs::wall_time()).unwrap_err(),
            e,
            "resolve must refuse the cipher suite check_protocols refused"
        );
        return;
    }
    let resolved = real
        .resolve(node, certs::wall_time())
        .unwrap_or_else(|e| panic!("a valid spec with real material failed to resolve: {e}"));
    assert_eq!(resolved.tuning, spec.tuning);
    let peer = resolved.nodes.keys().copied().find(|&n| n != node);
    let config = CoreConfig {
        spec: resolved,
        incarnation: Incarnation(1),
        seed: 7,
        time_provider: certs::time_provider(),
    };
    let mut now = Instant::now();
    let mut core = match Core::new(config, now) {
        Ok(core) => core,
        Err(e) => {
            assert!(
                matches!(e, SpecError::Tls { .. }),
                "Core::new failed: {e:?}"
            );
            return;
        }
    };
    run_briefly(&mut core, &mut now, peer);
}

/// Runs a freshly started core's timers a few times, with a peer link and
/// a hostile inbound connection.
fn run_briefly(core: &mut Core, now: &mut Instant, peer: Option<NodeId>) {
    let drain = |core: &mut Core, now: Instant| {
        let mut n = 0;
        while core.poll_output(now).is_some() {
            n += 1;
            assert!(n < 10_000, "poll_output never ends");
        }
    };
    drain(core, *now);
    if let Some(peer) = peer {
        if let Some(conn) = core.fuzz_connect_peer(*now, peer) {
            let mut ping = Vec::new();
            reign_proto::codec::Frame::Ping(9).encode(&mut ping);
            core.handle_input(*now, Input::Received { conn, bytes: &ping });
        }
    }
    if let Ok(conn) = core.accept(*now, "fuzz") {
        core.handle_input(
            *now,
            Input::Received {
                conn,
                bytes: b"\x16\x03\x01junk",
            },
        );
    }
    drain(core, *now);
    for _ in 0..6 {
        core.handle_input(*now, Input::Timeout);
        drain(core, *now);
        match core.poll_timeout() {
            Some(t) if t > *now => *now = t,
            _ => {}
        }
    }
    core.shutdown(*now);
    drain(core, *now);
    // The peer link never reports its transmits written, so the graceful
    // shutdown's drain runs to its deadline; then everything closes.
    if let Some(deadline) = core.drain_deadline() {
        *now = (*now).max(deadline);
        core.handle_input(*now, Input::Timeout);
        drain(core, *now);
    }
    assert_eq!(core.connection_count(), 0);
}
