//! TLS settings built from PEM files, for both processes: the client side with Postgres'
//! verification modes (`sslmode`: what a certificate must prove), used for the connections to
//! Postgres and between the tiers; and the server side (a certificate chain and its key) for
//! the listeners. One crypto provider, ring, chosen here for every config.
//!
//! The modes follow libpq (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//! `require` encrypts without checking who answers; `verify-ca` checks the chain up to a
//! trusted root; `verify-full` also checks that the certificate names the host. Roots are the
//! PEM file given (`sslrootcert`), else the Mozilla set (webpki-roots).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

pub use rustls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

/// What the server's certificate must prove (Postgres' `sslmode` without the plain-text
/// modes, which need no TLS config at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt, accept any certificate (`sslmode=require` and `prefer`).
    Nothing,
    /// The chain must lead to a trusted root; any host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// The crypto provider every config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config verifying as `verify` says against the roots in `roots` (a PEM file of
/// certificates), or the Mozilla roots when `None`.
pub fn client_config(verify: Verify, roots: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let store = Arc::new(root_store(roots)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = match verify {
        Verify::Full => builder.with_root_certificates(store).with_no_client_auth(),
        Verify::Chain | Verify::Nothing => {
            let chain = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                .build()
                .map_err(|e| TlsError::Config(format!("certificate verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Relaxed {
                    chain,
                    check_chain: verify == Verify::Chain,
                    provider,
                }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// A server config presenting the certificate chain in `cert` (PEM, leaf first) with the
/// private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1), speaking HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = certificates(cert, "certificate file")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        what: "private key file",
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key do not make a pair: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates in a PEM file; an error when it holds none.
pub fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn root_store(roots: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for cert in certificates(path, "root certificate file")? {
                store.add(cert).map_err(|e| TlsError::File {
                    what: "root certificate file",
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    Ok(store)
}

/// `verify-ca` (the chain, any name) and `require` (nothing). Handshake signatures are always
/// checked: the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct Relaxed {
    chain: Arc<WebPkiServerVerifier>,
    check_chain: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "test-certs")]
pub mod test_certs;
