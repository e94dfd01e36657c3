//! Talking to a running device over its web interface: a client with the
//! instance's password and pinned certificate, and waiting for a boot.

use std::path::Path;
use std::time::{Duration, Instant};

use krazy_update::client::{Client, ClientConfig, ClientError};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Why the device could not be reached or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A secret file could not be read.
    #[error("cannot read {}: {source}; an instance made by `krazy new DIR` has it in DIR/secrets", path.display())]
    Secret {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The boot services were not all running in time.
    #[error("after {waited:?} not every boot service is running: {last}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The last answer or error.
        last: String,
    },
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM text.
pub fn pem_cert_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .filter(|d| !d.is_empty())
}

/// The web port a client should use for `config`: HTTPS when TLS is on.
pub fn web_port(config: &Config) -> u16 {
    if config.web.tls {
        config.web.https_port
    } else {
        config.web.http_port
    }
}

/// A client for the instance whose secrets are in `secrets_dir`, at `host`
/// (`HOST:PORT`): HTTPS pinned to the instance's certificate when TLS is on.
pub fn client(config: &Config, secrets_dir: &Path, host: &str) -> Result<Client, RemoteError> {
    let read = |name: &str| {
        let path = secrets_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| RemoteError::Secret { path, source })
    };
    let password = read("password")?;
    let mut cc = ClientConfig::new(host, password.trim());
    cc.io_timeout = Duration::from_secs(20);
    if config.web.tls {
        let pem = read("tls-cert.pem")?;
        let der = pem_cert_der(&pem).ok_or_else(|| RemoteError::NoCertificate {
            path: secrets_dir.join("tls-cert.pem"),
        })?;
        cc = cc.with_pinned_cert(der);
    }
    Ok(Client::new(cc)?)
}

/// A service as `GET /api/v1/services` reports it (the fields used here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Its name.
    pub name: String,
    /// `starting`, `running`, `backoff`, `stopped` or `exited`.
    pub state: String,
}

/// Polls the device until every service that `config` starts at boot
/// (`dhcp`, `ntp` and the boot packages) is `running`; returns the list.
pub fn wait_boot_services(
    client: &Client,
    config: &Config,
    timeout: Duration,
) -> Result<Vec<ServiceState>, RemoteError> {
    let mut want: Vec<&str> = vec!["dhcp", "ntp"];
    want.extend(
        config
            .package
            .iter()
            .filter(|p| p.start == crate::config::Start::Boot)
            .map(|p| p.name.as_str()),
    );
    let start = Instant::now();
    loop {
        let last = match client.get_json::<Vec<ServiceState>>("/api/v1/services") {
            Ok(list) => {
                let ok = want
                    .iter()
                    .all(|w| list.iter().any(|s| s.name == *w && s.state == "running"));
                if ok {
                    return Ok(list);
                }
                format!("{list:?}")
            }
            Err(e) => e.to_string(),
        };
        if start.elapsed() > timeout {
            return Err(RemoteError::Timeout {
                waited: start.elapsed(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_cert_der_takes_the_first_certificate() {
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let pem = format!(
            "{}{}{}",
            a.signing_key.serialize_pem(),
            a.cert.pem(),
            b.cert.pem()
        );
        assert_eq!(pem_cert_der(&pem).unwrap(), a.cert.der().to_vec());
        assert_eq!(pem_cert_der(&a.signing_key.serialize_pem()), None);
        assert_eq!(pem_cert_der(""), None);
    }
}
