//! The crate's single error type.

/// Everything that can go wrong in the blind scheme.
///
/// Variants carry no secret material. [`Error::Decrypt`] deliberately says
/// nothing about *why* authentication failed (wrong key, tampered envelope,
/// wrong topic/partition/part, substituted DEK): callers must treat every
/// cause the same way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group element received from the peer has the wrong length or lies
    /// outside `[2, n-2]` (BLIND.md §5.1, §9 rule 3).
    #[error("invalid group element")]
    InvalidElement,
    /// Key material failed validation (on load, import or split).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// AEAD authentication failed. No detail, on purpose.
    #[error("decryption failed")]
    Decrypt,
    /// Malformed bytes (envelope, key file, names).
    #[error("malformed input: {0}")]
    Format(String),
    /// A data-encryption key reached a rotation limit (§6.2); make a new DEK.
    #[error("data key exhausted: {0}")]
    DekExhausted(&'static str),
    /// The OS random number generator failed.
    #[error("OS randomness unavailable")]
    Rng,
    /// The crypto backend (OpenSSL, ring, RustCrypto) reported an error.
    #[error("crypto backend: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Crypto(e.to_string())
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
