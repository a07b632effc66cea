//! A throw-away PKI for the remote signer's mutual TLS: one CA, a server certificate for
//! `127.0.0.1`/`localhost`, and client certificates, generated at run time with rcgen.
//!
//! [`write`] puts everything as PEM files in one folder: `ca.pem`, `server.pem` + `server.key`,
//! and `NAME.pem` + `NAME.key` per client. Private keys are written with mode 0600 (the node
//! refuses a client key readable by group or other).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files [`write`] made, by role.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The folder holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: the CA certificate that issued the server's and every client's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `server.pem`: the server certificate, valid for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server.key`: the server's private key (mode 0600).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// `NAME.pem`: the certificate of client `name`.
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `NAME.key`: the private key of client `name` (mode 0600).
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Generates a CA, a server certificate (SANs `127.0.0.1` and `localhost`, server auth) and one
/// client certificate per name in `clients` (client auth, common name and DNS subjectAltName =
/// the name), all issued by
/// the CA, and writes them to `dir` (which must exist; existing files are not overwritten, the
/// call panics instead). Fresh keys on every call: two calls make two unrelated PKIs.
pub fn write(dir: &Path, clients: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "avsnode test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("generating the CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-signing the CA");
    write_new(&dir.join("ca.pem"), &ca_cert.pem(), 0o644);
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(sans).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("generating a leaf key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("issuing a certificate");
        write_new(&dir.join(format!("{name}.pem")), &cert.pem(), 0o644);
        write_new(
            &dir.join(format!("{name}.key")),
            &key.serialize_pem(),
            0o600,
        );
    };
    leaf(
        "server",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    for client in clients {
        assert!(
            !["ca", "server"].contains(client),
            "client name {client:?} collides with the CA's or the server's files"
        );
        leaf(
            client,
            vec![(*client).to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
    }
    Pki {
        dir: dir.to_owned(),
    }
}

/// Creates `path` with `mode` (it must not exist) and writes `contents`.
fn write_new(path: &Path, contents: &str, mode: u32) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
