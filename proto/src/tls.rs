//! TLS 1.3 with mutual authentication against the cluster CA.
//!
//! Every node certificate names its node as the DNS name
//! `node-<id>.reign` ([`node_dns_name`]). A dialer verifies that the node it
//! reached presents a certificate for the node it meant to dial (rustls'
//! server-name check); a listener demands a client certificate signed by the
//! cluster CA (Go reign never asked for one, so anyone could join) and, after
//! the reign handshake, checks that it names the node the dialer claims to be.
//! One crypto backend, ring, serves rustls and rcgen alike.
//!
//! **Several CAs at once.** The cluster CA file may be a bundle of up to
//! [`MAX_CLUSTER_CAS`] certificates, so a CA can be rolled over while the
//! cluster runs: every node first trusts the old and the new CA, then gets a
//! certificate from the new one, then drops the old. A node's cluster
//! identity ([`ClusterIds`]) is therefore the set of the CAs it trusts, and
//! two nodes belong to the same cluster when their sets share a CA. A single
//! id (of the oldest CA, say) would not do: when the old CA is dropped,
//! nodes that already dropped it and nodes that have not yet would name
//! different ones and refuse each other halfway through the last step. A
//! node of a truly different cluster shares no CA and is still refused.

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConnection, RootCertStore, ServerConnection};

use crate::id::NodeId;
use rustls::pki_types::PrivateKeyDer;

use crate::error::SpecError;

/// The DNS name a node's certificate carries.
pub fn node_dns_name(node: NodeId) -> String {
    format!("node-{}.reign", node.0)
}

/// The one crypto provider reign uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Most CA certificates the cluster CA file may hold. A rollover needs two
/// at once (the old CA and its successor); four leaves room for a second
/// rollover begun before the first finished, and keeps the hello, which
/// carries one 32-byte id per CA, small.
pub const MAX_CLUSTER_CAS: usize = 4;

/// The id of one CA: the SHA-256 of its certificate. Nodes of different
/// clusters refuse each other in the handshake even if something let TLS
/// through.
pub fn cluster_id(cluster_cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cluster_cert.as_ref());
    let mut id = [0u8; 32];
    id.copy_from_slice(digest.as_ref());
    id
}

/// Whether a certificate names `node`.
pub fn cert_names_node(cert: &CertificateDer<'_>, node: NodeId) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_dns_name(node)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A node's cluster identity: the ids ([`cluster_id`]) of the CAs it
/// trusts, 1 to [`MAX_CLUSTER_CAS`] of them, in the order of its CA file.
/// With one CA it is that CA's id alone, as before CA bundles existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIds(Vec<[u8; 32]>);

impl ClusterIds {
    /// The identity of a node trusting `cas`.
    pub fn of(cas: &[CertificateDer<'_>]) -> ClusterIds {
        ClusterIds(cas.iter().map(cluster_id).collect())
    }

    /// Whether two nodes trust a CA in common (belong to one cluster).
    pub fn shares_ca(&self, other: &ClusterIds) -> bool {
        self.0.iter().any(|id| other.0.contains(id))
    }

    /// The ids, as the hello carries them: 32 bytes each, concatenated.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.concat()
    }

    /// Reads [`to_bytes`](ClusterIds::to_bytes): `None` unless it is 1 to
    /// [`MAX_CLUSTER_CAS`] whole ids.
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterIds> {
        let count = bytes.len() / 32;
        if !bytes.len().is_multiple_of(32) || count == 0 || count > MAX_CLUSTER_CAS {
            return None;
        }
        Some(ClusterIds(
            bytes
                .chunks_exact(32)
                .map(|c| {
                    let mut id = [0u8; 32];
                    id.copy_from_slice(c);
                    id
                })
                .collect(),
        ))
    }

    /// The ids, in the order of the CA file.
    pub fn ids(&self) -> &[[u8; 32]] {
        &self.0
    }
}

impl From<[u8; 32]> for ClusterIds {
    fn from(id: [u8; 32]) -> ClusterIds {
        ClusterIds(vec![id])
    }
}

fn roots(material: &NodeMaterial) -> Result<Arc<RootCertStore>, SpecError> {
    let bad = |error: String| SpecError::BadPem {
        field: "cluster_cert",
        error,
    };
    if material.cluster_certs.is_empty() || material.cluster_certs.len() > MAX_CLUSTER_CAS {
        return Err(bad(format!(
            "the cluster CA file holds {} certificates; 1 to {MAX_CLUSTER_CAS} are allowed",
            material.cluster_certs.len()
        )));
    }
    let mut roots = RootCertStore::empty();
    for ca in &material.cluster_certs {
        roots.add(ca.clone()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

fn client_verifier(material: &NodeMaterial) -> Result<Arc<dyn ClientCertVerifier>, SpecError> {
    WebPkiClientVerifier::builder_with_provider(roots(material)?, crypto_provider())
        .build()
        .map_err(|e| SpecError::Tls {
            error: e.to_string(),
        })
}

/// Checks that a node's certificate is signed by a cluster CA (one of the
/// bundle), valid at `now`, and names the node.
pub(crate) fn check_node_material(
    node: NodeId,
    material: &NodeMaterial,
    now: UnixTime,
) -> Result<(), SpecError> {
    let verifier = client_verifier(material)?;
    verifier
        .verify_client_cert(&material.cert_chain[0], &material.cert_chain[1..], now)
        .map_err(|e| SpecError::NotSignedByCluster {
            id: node.0,
            error: e.to_string(),
        })?;
    if !cert_names_node(&material.cert_chain[0], node) {
        return Err(SpecError::CertificateNamesOtherNode { id: node.0 });
    }
    Ok(())
}

/// The TLS material of one node, parsed and checked.
#[derive(Debug)]
pub struct NodeMaterial {
    /// The node's certificate chain (its certificate first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificates this node trusts: one, or during a CA
    /// rollover the old and the new (at most [`MAX_CLUSTER_CAS`]).
    pub cluster_certs: Vec<CertificateDer<'static>>,
}

impl NodeMaterial {
    /// Whether `other` holds the same certificates, key and CAs.
    pub fn same_as(&self, other: &NodeMaterial) -> bool {
        self.cert_chain == other.cert_chain
            && self.key.secret_der() == other.key.secret_der()
            && self.cluster_certs == other.cluster_certs
    }
}

impl Clone for NodeMaterial {
    fn clone(&self) -> NodeMaterial {
        NodeMaterial {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            cluster_certs: self.cluster_certs.clone(),
        }
    }
}

/// The rustls configurations of one node. A reload with renewed material
/// makes a new context ([`TlsContext::renewed`]) for new connections;
/// connections already up keep the configuration they started with.
pub(crate) struct TlsContext {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    pub(crate) cluster_id: ClusterIds,
    /// What the context was made from, to make the next one alike.
    material: NodeMaterial,
    protocols: Vec<String>,
    time: Arc<dyn TimeProvider>,
}

impl TlsContext {
    pub(crate) fn new(
        material: &NodeMaterial,
        protocols: &[String],
        time: Arc<dyn TimeProvider>,
    ) -> Result<TlsContext, SpecError> {
        let tls_err = |e: rustls::Error| SpecError::Tls {
            error: e.to_string(),
        };
        // rustls asserts (panics) when it writes an empty ALPN name or one
        // over 255 bytes into a ClientHello: refuse them here instead.
        if let Some(bad) = protocols.iter().find(|p| p.is_empty() || p.len() > 255) {
            return Err(SpecError::Tls {
                error: format!("protocol name {bad:?} is not 1 to 255 bytes long"),
            });
        }
        let alpn: Vec<Vec<u8>> = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();

        let time_for_next = time.clone();
        let mut client = ClientConfig::builder_with_details(crypto_provider(), time.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(roots(material)?)
            .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())
            .map_err(tls_err)?;
        client.alpn_protocols = alpn.clone();
        client.resumption = rustls::client::Resumption::disabled();

        let mut server = ServerConfig::builder_with_details(crypto_provider(), time)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(client_verifier(material)?)
            .with_single_cert(material.cert_chain.clone(), material.key.clone_key())
            .map_err(tls_err)?;
        server.alpn_protocols = alpn;
        server.send_tls13_tickets = 0;

        Ok(TlsContext {
            client: Arc::new(client),
            server: Arc::new(server),
            cluster_id: ClusterIds::of(&material.cluster_certs),
            material: material.clone(),
            protocols: protocols.to_vec(),
            time: time_for_next,
        })
    }

    /// A context for new connections from renewed `material`, with the same
    /// protocols and clock; `Ok(None)` when the material is unchanged.
    pub(crate) fn renewed(&self, material: &NodeMaterial) -> Result<Option<TlsContext>, SpecError> {
        if self.material.same_as(material) {
            return Ok(None);
        }
        TlsContext::new(material, &self.protocols, self.time.clone()).map(Some)
    }

    /// A client session to `peer`, verifying its certificate names `peer`.
    pub(crate) fn client(&self, peer: NodeId) -> Result<ClientConnection, rustls::Error> {
        let name = ServerName::try_from(node_dns_name(peer))
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        ClientConnection::new(self.client.clone(), name)
    }

    /// A server session for an inbound connection.
    pub(crate) fn server(&self) -> Result<ServerConnection, rustls::Error> {
        ServerConnection::new(self.server.clone())
    }
}

/// The system clock, for certificate validity checks.
pub fn system_time() -> Arc<dyn TimeProvider> {
    Arc::new(rustls::time_provider::DefaultTimeProvider)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen::ClusterCa;
    use crate::spec::ClusterSpec;

    fn spec_with(cert: &crate::certgen::CertAndKey, cas: &[&ClusterCa]) -> ClusterSpec {
        ClusterSpec {
            nodes: vec![crate::spec::NodeDescriptor {
                id: 1,
                address: "127.0.0.1:1".into(),
                listen_address: String::new(),
                local_address: String::new(),
            }],
            node_cert_pem: cert.cert_pem.clone(),
            node_key_pem: cert.key_pem.clone(),
            cluster_cert_pem: cas.iter().map(|ca| ca.cert_pem()).collect(),
            ..ClusterSpec::default()
        }
    }

    #[test]
    fn a_bundle_of_up_to_the_limit_resolves_and_one_more_is_refused() {
        let cas: Vec<ClusterCa> = (0..=MAX_CLUSTER_CAS)
            .map(|_| ClusterCa::generate().unwrap())
            .collect();
        let now = UnixTime::now();
        // A certificate from the last CA of a bundle of 1, 2, …, the limit.
        for n in 1..=MAX_CLUSTER_CAS {
            let bundle: Vec<&ClusterCa> = cas[..n].iter().collect();
            let cert = cas[n - 1].node_cert(NodeId(1)).unwrap();
            let resolved = spec_with(&cert, &bundle).resolve(NodeId(1), now).unwrap();
            assert_eq!(resolved.material.cluster_certs.len(), n);
            let ids = ClusterIds::of(&resolved.material.cluster_certs);
            assert_eq!(ClusterIds::from_bytes(&ids.to_bytes()), Some(ids));
        }
        let all: Vec<&ClusterCa> = cas.iter().collect();
        let cert = cas[0].node_cert(NodeId(1)).unwrap();
        let e = spec_with(&cert, &all).resolve(NodeId(1), now).unwrap_err();
        assert!(e.to_string().contains("1 to 4 are allowed"), "{e}");
        // A certificate from a CA outside the bundle.
        let e = spec_with(&cas[2].node_cert(NodeId(1)).unwrap(), &all[..2])
            .resolve(NodeId(1), now)
            .unwrap_err();
        assert!(
            matches!(e, SpecError::NotSignedByCluster { id: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn identities_sharing_a_ca_are_one_cluster() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let ids = |list: &[[u8; 32]]| ClusterIds(list.to_vec());
        assert!(ids(&[a]).shares_ca(&ids(&[a, b])));
        assert!(ids(&[a, b]).shares_ca(&ids(&[b])));
        assert!(!ids(&[a]).shares_ca(&ids(&[b])));
        assert!(!ids(&[a, b]).shares_ca(&ids(&[c])));
        assert_eq!(ClusterIds::from(a).to_bytes(), a.to_vec());
    }
}
