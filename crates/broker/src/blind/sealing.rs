//! Server shares at rest: AES-256-GCM under a broker-local key file.
//!
//! Honest limits: a broker that can read this key can decrypt the shares,
//! and it must, to serve resolutions (BLIND.md §2 already counts the broker
//! key store as part of the broker). What sealing buys is that the metadata
//! log, its snapshots and backups of the data directory hold no exponent in
//! the clear, and that a share cannot be moved to another principal or kid
//! in the log without failing authentication (both are bound as AAD).

use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("share key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("a stored share failed authentication")]
    Open,
    #[error("randomness unavailable")]
    Rng,
}

pub struct ShareSealer {
    path: PathBuf,
    key: Mutex<Option<LessSafeKey>>,
    /// Why a missing key file must not be created here (a cluster node
    /// whose key would differ from the others').
    no_create: Option<&'static str>,
}

impl std::fmt::Debug for ShareSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareSealer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn aad(principal: &str, kid_hex: &str) -> Vec<u8> {
    let mut out = b"veil/v1/share-seal".to_vec();
    for part in [principal.as_bytes(), kid_hex.as_bytes()] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

impl ShareSealer {
    pub fn new(path: PathBuf) -> Self {
        ShareSealer {
            path,
            key: Mutex::new(None),
            no_create: None,
        }
    }

    /// A missing key file is an error saying `why`, never created.
    pub fn never_create(mut self, why: &'static str) -> Self {
        self.no_create = Some(why);
        self
    }

    /// Seal a share file (`ServerShare::to_bytes`) for (principal, kid).
    /// Creates the key file on first use.
    pub fn seal(&self, principal: &str, kid_hex: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut guard = self.key.lock();
        let key = match guard.take() {
            Some(k) => k,
            None => match (
                load_or_create(&self.path, self.no_create.is_none()),
                self.no_create,
            ) {
                (Err(_), Some(why)) if !self.path.exists() => {
                    return Err(key_error(&self.path, why))
                }
                (result, _) => result?,
            },
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Rng)?;
        let mut buf = plain.to_vec();
        let sealed = key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(principal, kid_hex)),
            &mut buf,
        );
        *guard = Some(key);
        sealed.map_err(|_| SealError::Rng)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Open a sealed share of (principal, kid).
    pub fn open(
        &self,
        principal: &str,
        kid_hex: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let mut guard = self.key.lock();
        let key = match guard.take() {
            Some(k) => k,
            None => load_or_create(&self.path, false)?,
        };
        let result = (|| {
            let (&v, rest) = sealed.split_first().ok_or(SealError::Open)?;
            if v != VERSION || rest.len() < NONCE_LEN {
                return Err(SealError::Open);
            }
            let (nonce, ct) = rest.split_at(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
            let mut buf = Zeroizing::new(ct.to_vec());
            let len = key
                .open_in_place(nonce, Aad::from(aad(principal, kid_hex)), &mut buf)
                .map_err(|_| SealError::Open)?
                .len();
            buf.truncate(len);
            Ok(buf)
        })();
        *guard = Some(key);
        result
    }
}

fn key_error(path: &Path, reason: impl ToString) -> SealError {
    SealError::KeyFile {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn load_or_create(path: &Path, create: bool) -> Result<LessSafeKey, SealError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => create_key(path)?,
        Err(e) => return Err(key_error(path, e)),
    };
    if bytes.len() != KEY_LEN {
        return Err(key_error(path, "must hold exactly 32 bytes"));
    }
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| key_error(path, "bad key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn create_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SealError::Rng)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| key_error(path, e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| key_error(path, e))?;
    f.write_all(&key).map_err(|e| key_error(path, e))?;
    f.sync_all().map_err(|e| key_error(path, e))?;
    tracing::info!(path = %path.display(), "created the blind share sealing key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_binds_owner_and_creates_key_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/share.key");
        let s = ShareSealer::new(path.clone());
        assert!(s.open("User:a", "6b", &[1, 2]).is_err(), "no key yet");
        let sealed = s.seal("User:a", "6b", b"secret exponent").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &*s.open("User:a", "6b", &sealed).unwrap(),
            b"secret exponent"
        );
        assert!(s.open("User:b", "6b", &sealed).is_err());
        assert!(s.open("User:a", "6c", &sealed).is_err());
        // A second sealer on the same file reads the same key.
        let again = ShareSealer::new(path.clone());
        assert!(again.open("User:a", "6b", &sealed).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_node_that_must_not_create_the_key_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.key");
        let s = ShareSealer::new(path.clone()).never_create("copy the cluster's key here");
        let err = s.seal("User:a", "6b", b"share").unwrap_err().to_string();
        assert!(err.contains("copy the cluster's key here"), "{err}");
        assert!(!path.exists(), "no key was created");
        // Given the key, it seals and another node with the same file opens.
        std::fs::write(&path, [7u8; 32]).unwrap();
        let sealed = s.seal("User:a", "6b", b"share").unwrap();
        let other = ShareSealer::new(path).never_create("unused");
        assert_eq!(&*other.open("User:a", "6b", &sealed).unwrap(), b"share");
    }
}
