//! TLS 1.3 with mutual authentication against the cluster CA.
//!
//! Every node certificate names its node as the DNS name
//! `node-<id>.reign` ([`node_dns_name`]). A dialer verifies that the node it
//! reached presents a certificate for the node it meant to dial (rustls'
//! server-name check); a listener demands a client certificate signed by the
//! cluster CA (Go reign never asked for one, so anyone could join) and, after
//! the reign handshake, checks that it names the node the dialer claims to be.
//! One crypto backend, ring, serves rustls and rcgen alike.

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

/// A cluster's identity: the SHA-256 of its CA certificate. Nodes of
/// different clusters refuse each other in the handshake even if something
/// let TLS through.
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

fn roots(material: &NodeMaterial) -> Result<Arc<RootCertStore>, SpecError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(material.cluster_cert.clone())
        .map_err(|e| SpecError::BadPem {
            field: "cluster_cert",
            error: e.to_string(),
        })?;
    Ok(Arc::new(roots))
}

fn client_verifier(material: &NodeMaterial) -> Result<Arc<dyn ClientCertVerifier>, SpecError> {
    WebPkiClientVerifier::builder_with_provider(roots(material)?, crypto_provider())
        .build()
        .map_err(|e| SpecError::Tls {
            error: e.to_string(),
        })
}

/// Checks that a node's certificate is signed by the cluster CA, valid at
/// `now`, and names the node.
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
    /// The cluster CA certificate.
    pub cluster_cert: CertificateDer<'static>,
}

impl Clone for NodeMaterial {
    fn clone(&self) -> NodeMaterial {
        NodeMaterial {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            cluster_cert: self.cluster_cert.clone(),
        }
    }
}

/// The rustls configurations of one node.
pub(crate) struct TlsContext {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    pub(crate) cluster_id: [u8; 32],
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
            cluster_id: cluster_id(&material.cluster_cert),
        })
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
