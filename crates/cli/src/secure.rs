//! How the admin subcommands reach a secured broker: TLS (with an optional
//! client certificate) and SASL login (PLAIN or SCRAM), from flags or env.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use veil_broker::auth::scram::{Mechanism, ScramClient};
use veil_client::Connection;

#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    /// Broker to talk to (host:port).
    #[arg(
        long,
        short = 'b',
        env = "VEIL_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = "VEIL_SECURITY_PROTOCOL", default_value = "PLAINTEXT")]
    security_protocol: String,
    /// CA certificate(s) the broker's certificate must chain to (PEM).
    #[arg(long, env = "VEIL_SSL_CA")]
    ca_file: Option<PathBuf>,
    /// Client certificate for mTLS (PEM).
    #[arg(long, env = "VEIL_SSL_CERT", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Client private key for mTLS (PEM). (`--key-file` is the blind-topic
    /// user key of `produce`/`consume`.)
    #[arg(long = "ssl-key-file", env = "VEIL_SSL_KEY", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "VEIL_SASL_MECHANISM", default_value = "SCRAM-SHA-512")]
    sasl_mechanism: String,
    /// SASL user to log in as.
    #[arg(long, env = "VEIL_USER")]
    user: Option<String>,
    /// SASL password (prefer the VEIL_PASSWORD environment variable: flags show in `ps`).
    #[arg(long, env = "VEIL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// Shows where and how the client connects, never the password.
impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ConnectArgs {
    /// An admin connection to `addr` (a coordinator FindCoordinator named),
    /// reusing `admin` when it is already connected there.
    pub async fn admin_at(
        &self,
        admin: veil_client::Admin,
        addr: String,
        client_id: &str,
    ) -> anyhow::Result<veil_client::Admin> {
        if addr == self.bootstrap {
            return Ok(admin);
        }
        let mut there = self.clone();
        there.bootstrap = addr;
        Ok(veil_client::Admin::from_connection(
            there.connect(client_id).await?,
        ))
    }

    pub async fn connect(&self, client_id: &str) -> anyhow::Result<Connection> {
        let (tls, sasl) = match self.security_protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => bail!("unknown security protocol '{other}'"),
        };
        let tcp = Connection::tcp(&self.bootstrap).await?;
        let mut conn = if tls {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config()?));
            let host = self
                .bootstrap
                .rsplit_once(':')
                .map_or(self.bootstrap.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = ServerName::try_from(host.to_owned())
                .with_context(|| format!("'{host}' is not a valid TLS server name"))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .context("TLS handshake with the broker failed")?;
            Connection::over(Box::new(stream), client_id).await?
        } else {
            Connection::over(Box::new(tcp), client_id).await?
        };
        if sasl {
            self.login(&mut conn).await?;
        }
        Ok(conn)
    }

    /// The same settings as librdkafka properties, for the data path.
    pub fn rdkafka_props(&self) -> Vec<(String, String)> {
        let protocol = self.security_protocol.to_ascii_lowercase();
        let mut p = vec![
            ("bootstrap.servers".to_owned(), self.bootstrap.clone()),
            ("security.protocol".to_owned(), protocol.clone()),
        ];
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k.to_owned(), v));
            }
        };
        if protocol.starts_with("sasl") {
            set(
                "sasl.mechanism",
                Some(self.sasl_mechanism.to_ascii_uppercase()),
            );
            set("sasl.username", self.user.clone());
            set("sasl.password", self.password.clone());
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        set("ssl.ca.location", path(&self.ca_file));
        set("ssl.certificate.location", path(&self.cert_file));
        set("ssl.key.location", path(&self.key_file));
        p
    }

    /// The SASL user this client logs in as, if it logs in with SASL.
    pub fn sasl_user(&self) -> Option<&str> {
        let sasl = self
            .security_protocol
            .to_ascii_uppercase()
            .starts_with("SASL");
        self.user.as_deref().filter(|_| sasl)
    }

    /// A reconnecting factory of authenticated connections (blind topics).
    pub fn connector(&self, client_id: &'static str) -> veil_client::Connector {
        let args = Arc::new(self.clone());
        Arc::new(move || {
            let args = args.clone();
            Box::pin(async move {
                args.connect(client_id)
                    .await
                    .map_err(|e| veil_client::BlindError::Connect(format!("{e:#}")))
            })
        })
    }

    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let ca = self
            .ca_file
            .as_ref()
            .context("SSL needs --ca-file (or VEIL_SSL_CA)")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            roots.add(cert.with_context(|| format!("bad PEM in {}", ca.display()))?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        Ok(match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => {
                let chain = CertificateDer::pem_file_iter(c)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .with_context(|| format!("cannot read {}", c.display()))?;
                let key = PrivateKeyDer::from_pem_file(k)
                    .with_context(|| format!("cannot read a key from {}", k.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => builder.with_no_client_auth(),
        })
    }

    async fn login(&self, conn: &mut Connection) -> anyhow::Result<()> {
        let user = self
            .user
            .as_deref()
            .context("SASL needs --user (or VEIL_USER)")?;
        let password = self
            .password
            .as_deref()
            .context("SASL needs a password (VEIL_PASSWORD)")?;
        let mech = self.sasl_mechanism.to_ascii_uppercase();
        conn.sasl_handshake(&mech).await?;
        if mech == "PLAIN" {
            conn.sasl_authenticate(format!("\0{user}\0{password}").into_bytes())
                .await?;
            return Ok(());
        }
        let m = Mechanism::from_name(&mech)
            .with_context(|| format!("unknown SASL mechanism '{mech}'"))?;
        let nonce =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
        let mut client = ScramClient::new(m, user, password, &nonce);
        let server_first = conn.sasl_authenticate(client.client_first()).await?;
        let last = client
            .client_final(&server_first)
            .map_err(|e| anyhow::anyhow!("SCRAM: {e}"))?;
        let server_final = conn.sasl_authenticate(last).await?;
        client
            .verify_server_final(&server_final)
            .map_err(|_| anyhow::anyhow!("the broker failed SCRAM server verification"))
    }
}
