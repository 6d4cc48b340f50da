//! TLS with rustls (aws-lc-rs provider), pinned to TLS 1.2 and 1.3.
//!
//! Owns the HTTPS server configuration and the client configuration used for
//! PostgreSQL. Providers are passed explicitly, so nothing depends on a
//! process-wide default having been installed. Never logs key material.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The only protocol versions Moat speaks: TLS 1.0 and 1.1 are refused at the handshake.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The HTTPS server configuration. Holds a private key, so `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ServerTls(Arc<ServerConfig>);

impl ServerTls {
    pub fn config(&self) -> Arc<ServerConfig> {
        self.0.clone()
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(certificate and key loaded, redacted)")
    }
}

/// Loads a PEM certificate chain and private key into a server configuration
/// with ALPN `h2` and `http/1.1` (WebSocket clients need the latter).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTls, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("MOAT_TLS_CERT is not a readable PEM certificate chain ({e})"))?;
    if chain.is_empty() {
        return Err("MOAT_TLS_CERT contains no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("MOAT_TLS_KEY is not a readable PEM private key ({e})"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| format!("TLS setup failed ({e})"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and private key do not form a usable pair ({e})"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls(Arc::new(config)))
}

/// Client configuration for PostgreSQL: certificates are always verified, against
/// the system's roots or, when given, only the roots in `ca_file` (libpq's `sslrootcert`).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert is not a readable PEM file ({e})"))?;
            for cert in certs {
                roots.add(cert).map_err(|e| format!("sslrootcert holds an unusable certificate ({e})"))?;
            }
        }
        None => {
            // Unreadable individual system certificates are skipped, as every TLS client does.
            let (added, _ignored) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            tracing::debug!(added, "loaded system root certificates for database TLS");
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| format!("TLS setup failed ({e})"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
