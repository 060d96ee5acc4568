//! Cluster certificates: a CA and one certificate per node (rcgen, ring).
//!
//! Used by `reign init`, by tests and by the simulator. Nodes only ever need
//! the CA certificate, never its key. Keys are Ed25519: fast to make and to
//! use, and their signatures have a fixed size, so handshakes are the same
//! length every time (the simulator replays runs byte for byte).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::id::NodeId;
use crate::spec::{ClusterSpec, NodeDescriptor};
use crate::tls::node_dns_name;

/// A generated certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A cluster CA able to issue node certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A random 16-byte serial number whose DER encoding is always the same
/// length (top bit clear, first byte non-zero), so certificates, and with
/// them handshakes, have a fixed size.
fn serial() -> rcgen::SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; 16];
    // The system RNG does not fail on supported platforms; a fixed serial
    // would still be valid if it did.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    rcgen::SerialNumber::from(bytes)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The common name of CAs made by [`ClusterCa::generate`].
pub const DEFAULT_CA_NAME: &str = "reign cluster CA";

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, rcgen::Error> {
        ClusterCa::generate_named(DEFAULT_CA_NAME)
    }

    /// A new CA with a fresh key and the given common name.
    pub fn generate_named(name: &str) -> Result<ClusterCa, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let params = ca_params(name);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA made earlier by [`ClusterCa::generate`], from its PEM files, to
    /// issue certificates for more nodes.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::new(ca_params(DEFAULT_CA_NAME), key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Keep it off the nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate and key for `node`, naming it as `node-<id>.reign`,
    /// usable as both TLS client and server.
    pub fn node_cert(&self, node: NodeId) -> Result<CertAndKey, rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(vec![node_dns_name(node)])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("reign node {}", node.0));
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// An in-memory spec for `node` of a cluster of `ids`, every node on
    /// 127.0.0.1 at the given ports, with this node's PEMs inlined. Handy for
    /// tests and simulations.
    pub fn inline_spec(
        &self,
        node: NodeId,
        addresses: &[(NodeId, String)],
    ) -> Result<ClusterSpec, rcgen::Error> {
        let cert = self.node_cert(node)?;
        Ok(ClusterSpec {
            nodes: addresses
                .iter()
                .map(|(id, address)| NodeDescriptor {
                    id: id.0,
                    address: address.clone(),
                    listen_address: String::new(),
                    local_address: String::new(),
                })
                .collect(),
            node_cert_pem: cert.cert_pem,
            node_key_pem: cert.key_pem,
            cluster_cert_pem: self.cert_pem.clone(),
            ..ClusterSpec::default()
        })
    }
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}
