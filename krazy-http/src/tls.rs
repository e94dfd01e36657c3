//! TLS (rustls, ring provider) to a peer that must present exactly one
//! pinned certificate, whatever its name or issuer: how krazy talks to a
//! device whose self-signed certificate it was given.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
};

use crate::HttpError;

pub use rustls;

/// Lowercase hex SHA-256 of a certificate (DER), as printed in errors.
pub fn cert_fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts exactly one certificate, still checking that the peer holds its
/// key (the handshake signature is verified against it), and remembers the
/// certificate it was shown.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    seen: Mutex<Option<Vec<u8>>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.as_ref().to_vec());
        }
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A connector to peers presenting the pinned certificate.
///
/// Each [`PinnedTls::connect`] gets its own verifier, so one value can be
/// shared by threads connecting at once.
#[derive(Debug, Clone)]
pub struct PinnedTls {
    der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl PinnedTls {
    /// A connector accepting exactly the certificate `der`; fails
    /// ([`HttpError::TlsConfig`]) when rustls cannot be set up.
    pub fn new(der: Vec<u8>) -> Result<Self, HttpError> {
        let t = PinnedTls {
            der,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        t.config()?;
        Ok(t)
    }

    /// The pinned certificate (DER).
    pub fn pinned(&self) -> &[u8] {
        &self.der
    }

    fn config(&self) -> Result<(Arc<rustls::ClientConfig>, Arc<Pinned>), HttpError> {
        let pinned = Arc::new(Pinned {
            der: self.der.clone(),
            seen: Mutex::new(None),
            algs: self.provider.signature_verification_algorithms,
        });
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(HttpError::TlsConfig)?
            .dangerous()
            .with_custom_certificate_verifier(pinned.clone())
            .with_no_client_auth();
        Ok((Arc::new(config), pinned))
    }

    /// Runs the handshake over `sock` with the peer at `host` (`HOST:PORT`,
    /// `[v6]:PORT` or a bare host; a name that is no valid server name is
    /// sent as `krazy.invalid`: the pin, not the name, is checked). A
    /// different certificate is [`HttpError::NotPinned`]; any other failure
    /// [`HttpError::Tls`].
    pub fn connect<S: Read + Write>(
        &self,
        host: &str,
        sock: S,
    ) -> Result<StreamOwned<ClientConnection, S>, HttpError> {
        let (config, pinned) = self.config()?;
        let name_part = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
            _ => host,
        }
        .trim_start_matches('[')
        .trim_end_matches(']');
        let name = ServerName::try_from(name_part.to_string())
            .or_else(|_| ServerName::try_from("krazy.invalid"))
            .map_err(|e| HttpError::Tls(std::io::Error::other(e)))?;
        let conn = ClientConnection::new(config, name)
            .map_err(|e| HttpError::Tls(std::io::Error::other(e)))?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                let seen = pinned.seen.lock().ok().and_then(|g| g.clone());
                return Err(match seen {
                    Some(got) if got != self.der => HttpError::NotPinned {
                        got: cert_fingerprint(&got),
                        want: cert_fingerprint(&self.der),
                    },
                    _ => HttpError::Tls(e),
                });
            }
        }
        Ok(s)
    }
}
