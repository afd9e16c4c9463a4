//! Certificates for mutual-TLS tests and the lab: a CA, a server certificate (RSA key by
//! default, so TLS 1.2's only allowed suite ECDHE-RSA-AES128-GCM-SHA256 works; ECDSA on
//! request), a client certificate, and a client certificate from a second, unrelated CA.
//! Everything is written as PEM files into a temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generate certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("write {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("generate RSA key with openssl: {0}")]
    Openssl(String),
}

/// The server key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKey {
    Rsa,
    Ecdsa,
}

/// PEM files in a temporary directory.
pub struct TestCerts {
    dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// CA that signed nothing the server trusts.
    pub other_ca_cert: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

/// Names the server certificate is valid for (the controller and the lab policy server share it).
pub const SERVER_NAMES: [&str; 4] = [
    "silk-controller.service.cf.internal",
    "policy-server.service.cf.internal",
    "localhost",
    "127.0.0.1",
];

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn rsa_key() -> Result<KeyPair, CertsError> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .map_err(|e| CertsError::Openssl(e.to_string()))?;
    if !out.status.success() {
        return Err(CertsError::Openssl(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(KeyPair::from_pem_and_sign_algo(
        &pem,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    key: KeyPair,
) -> Result<(String, String), CertsError> {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, CertsError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| CertsError::Io(path.display().to_string(), e))?;
    Ok(path)
}

impl TestCerts {
    /// Generates everything; the server key is RSA-2048 or ECDSA P-256.
    pub fn generate(server_key: ServerKey) -> Result<Self, CertsError> {
        TestCerts::generate_for(server_key, SERVER_NAMES[0], &SERVER_NAMES)
    }

    /// Like [`TestCerts::generate`] with a server certificate for `server_cn` and
    /// `server_names` (the Loggregator agent's is `metron`, as in cf-deployment).
    pub fn generate_for(
        server_key: ServerKey,
        server_cn: &str,
        server_names: &[&str],
    ) -> Result<Self, CertsError> {
        let dir = tempfile::Builder::new()
            .prefix("silk-certs.")
            .tempdir()
            .map_err(|e| CertsError::Io("tempdir".into(), e))?;
        let ca = ca("silk test CA")?;
        let other = ca_other()?;
        let key = match server_key {
            ServerKey::Rsa => rsa_key()?,
            ServerKey::Ecdsa => KeyPair::generate()?,
        };
        let (server_cert, server_key) = leaf(
            &ca,
            server_cn,
            server_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            key,
        )?;
        let (client_cert, client_key) = leaf(
            &ca,
            "silk-daemon",
            &["silk-daemon"],
            ExtendedKeyUsagePurpose::ClientAuth,
            KeyPair::generate()?,
        )?;
        let (other_cert, other_key) = leaf(
            &other,
            "silk-daemon",
            &["silk-daemon"],
            ExtendedKeyUsagePurpose::ClientAuth,
            KeyPair::generate()?,
        )?;
        let d = dir.path();
        Ok(TestCerts {
            ca_cert: write(d, "ca.crt", &ca.pem())?,
            server_cert: write(d, "server.crt", &server_cert)?,
            server_key: write(d, "server.key", &server_key)?,
            client_cert: write(d, "client.crt", &client_cert)?,
            client_key: write(d, "client.key", &client_key)?,
            other_ca_cert: write(d, "other-ca.crt", &other.pem())?,
            other_client_cert: write(d, "other-client.crt", &other_cert)?,
            other_client_key: write(d, "other-client.key", &other_key)?,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the files after drop (the lab's state directory owns them then).
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

fn ca_other() -> Result<CertifiedIssuer<'static, KeyPair>, CertsError> {
    ca("unrelated test CA")
}

/// Path as a `&str` for configs; test paths are always UTF-8.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
