//! A throw-away PKI made with rcgen, written to a temporary directory: a CA, and on demand
//! server and client certificates signed by it (valid, expired, for another name), self-signed
//! ones, and a second, unrelated CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// Hex SHA-256 of the certificate's DER (what the registry knows devices by).
    pub fn fingerprint(&self) -> String {
        let der = CertificateDer::from_pem_file(&self.cert).expect("read the certificate");
        super::sha256_hex(der.as_ref())
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Server,
    Client,
}

/// A CA in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM): the trust anchor to give clients or servers.
    pub ca: PathBuf,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("name", &self.name).finish()
    }
}

impl TestPki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, issuer.pem()).expect("write CA");
        TestPki {
            dir,
            name: name.to_owned(),
            issuer,
            ca,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn params(names: &[&str], usage: Use) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Use::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Use::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params
    }

    fn write(&self, file: &str, cert_pem: String, key: &KeyPair) -> Pair {
        let cert = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert, cert_pem).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Pair {
            cert,
            key: key_path,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn leaf(&self, file: &str, names: &[&str], usage: Use) -> Pair {
        let params = Self::params(names, usage);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        self.write(file, cert.pem(), &key)
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, file: &str) -> Pair {
        self.leaf(file, &["127.0.0.1", "localhost"], Use::Server)
    }

    /// A client certificate named `cn`.
    pub fn client(&self, file: &str, cn: &str) -> Pair {
        self.leaf(file, &[cn], Use::Client)
    }

    /// A server certificate for 127.0.0.1 signed by this CA that expired in 2001.
    pub fn expired_server(&self, file: &str) -> Pair {
        let mut params = Self::params(&["127.0.0.1", "localhost"], Use::Server);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        self.write(file, cert.pem(), &key)
    }

    /// A self-signed server certificate for 127.0.0.1 (signed by nobody's CA).
    pub fn self_signed_server(&self, file: &str) -> Pair {
        let params = Self::params(&["127.0.0.1", "localhost"], Use::Server);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.self_signed(&key).expect("self-sign");
        self.write(file, cert.pem(), &key)
    }
}
