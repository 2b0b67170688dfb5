//! TLS for SSL and SASL_SSL listeners: rustls with the ring provider, TLS
//! 1.2 and 1.3 only, optional client-certificate verification (mTLS), and
//! certificates that reload when their files change or on SIGHUP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ClientAuth, TlsConfig};

use super::principal::PrincipalMapper;

/// How often certificate files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(5);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = load_certs(cert)?;
    // The error names the file, never its contents.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unsupported private key in {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(ck)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The listener's certificate and key, swapped in place on reload so new
/// handshakes pick them up while open connections keep theirs.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ReloadingCert, String> {
        let stamps = (mtime(cert_file), mtime(key_file));
        Ok(ReloadingCert {
            current: RwLock::new(Arc::new(load_certified_key(cert_file, key_file)?)),
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            stamps: Mutex::new(stamps),
        })
    }

    /// Reloads if either file changed (or always, when `force`). A broken
    /// new file is logged and the old certificate stays in service.
    pub fn reload(&self, force: bool) -> bool {
        let now = (mtime(&self.cert_file), mtime(&self.key_file));
        let mut stamps = self.stamps.lock();
        if !force && *stamps == now {
            return false;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(ck) => {
                *self.current.write() = Arc::new(ck);
                *stamps = now;
                tracing::info!(cert = %self.cert_file.display(), "reloaded TLS certificate");
                true
            }
            Err(e) => {
                // Half-written files settle by the next poll.
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the previous one");
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

/// Everything a TLS listener needs per connection.
#[derive(Clone)]
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub cert: Arc<ReloadingCert>,
    pub mapper: Arc<PrincipalMapper>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    pub fn new(cfg: &TlsConfig) -> Result<ListenerTls, String> {
        let provider = provider();
        let cert = Arc::new(ReloadingCert::load(&cfg.cert_file, &cfg.key_file)?);
        let verifier = match (cfg.client_auth, &cfg.ca_file) {
            (ClientAuth::None, _) => WebPkiClientVerifier::no_client_auth(),
            (auth, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
                }
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                let builder = if auth == ClientAuth::Requested {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder
                    .build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?
            }
            (_, None) => return Err("client_auth needs ca_file".into()),
        };
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        Ok(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            mapper: Arc::new(PrincipalMapper::parse(&cfg.principal_mapping_rules)?),
        })
    }

    /// The principal of a verified client certificate chain (leaf first),
    /// `None` if the mapping rules give it none.
    pub fn principal(&self, chain: &[CertificateDer<'_>]) -> Option<String> {
        let dn = super::principal::subject_dn(chain.first()?)?;
        self.mapper.map(&dn).map(|name| format!("User:{name}"))
    }
}

/// A TLS client configuration for dialing other nodes: it trusts only
/// `ca_file` and presents `cert_file`/`key_file` (mTLS between nodes).
pub fn node_client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca_file)? {
        roots
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", ca_file.display()))?;
    }
    let chain = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key_file.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} does not fit {}: {e}",
                key_file.display(),
                cert_file.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Polls certificate files and reloads on change or SIGHUP until shutdown.
pub async fn watch(certs: Vec<Arc<ReloadingCert>>, shutdown: CancellationToken) {
    if certs.is_empty() {
        return;
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let forced = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELOAD_POLL) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if forced {
            tracing::info!("SIGHUP: reloading TLS certificates");
        }
        for c in &certs {
            let c = Arc::clone(c);
            let _ = tokio::task::spawn_blocking(move || c.reload(forced)).await;
        }
    }
}
