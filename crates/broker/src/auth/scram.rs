//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): credential
//! derivation, message parsing and both sides of the exchange. Pure: no I/O,
//! the server nonce and the credential lookup are passed in.
//!
//! Channel binding (`-PLUS`) is not offered, as in Kafka.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's bounds on SCRAM iteration counts (`ScramMechanism.minIterations`
/// and the 16384 cap AlterUserScramCredentials enforces).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;
/// Iterations shown (SCRAM) and spent (PLAIN) for a user that does not
/// exist: what `veil user add` and `veil user hash-plain` use by default,
/// so a missing user looks and costs like a typical one.
pub const DECOY_ITERATIONS: u32 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The code in AlterUserScramCredentials / DescribeUserScramCredentials.
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match self {
            Mechanism::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            Mechanism::Sha512 => Hmac::<Sha512>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server keeps for one user and mechanism. The password and the
/// salted password are never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Derives the stored credential from a salted password (what
    /// AlterUserScramCredentials carries).
    pub fn from_salted(mech: Mechanism, salt: &[u8], iterations: u32, salted: &[u8]) -> Credential {
        let client_key = mech.hmac(salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: mech.hash(&client_key),
            server_key: mech.hmac(salted, b"Server Key"),
        }
    }

    /// Keys of the right length for `mech` that match no proof: the
    /// exchange of a user that does not exist runs on them, so it costs the
    /// same as a real one.
    fn decoy(mech: Mechanism) -> Credential {
        let len = mech.hash(b"").len();
        Credential {
            salt: Vec::new(),
            iterations: DECOY_ITERATIONS,
            stored_key: vec![0; len],
            server_key: vec![0; len],
        }
    }

    pub fn from_password(
        mech: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Credential {
        let salted = mech.salted_password(password.as_bytes(), salt, iterations);
        Credential::from_salted(mech, salt, iterations, &salted)
    }
}

/// Why an exchange failed. Kept for debug logs; clients only ever see a
/// generic message. Carries no secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM extensions are not supported")]
    Extension,
    #[error("authorization id differs from the user name")]
    AuthzId,
    #[error("nonce mismatch")]
    Nonce,
    #[error("invalid proof")]
    Proof,
    #[error("message out of order")]
    State,
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,,` (or with an authzid), echoed back in `c=`.
    pub gs2_header: String,
    pub username: String,
    pub nonce: String,
    /// The message without its GS2 header, part of AuthMessage.
    pub bare: String,
}

/// The client's final message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFinal {
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// Everything before `,p=`, part of AuthMessage.
    pub without_proof: String,
}

impl fmt::Debug for ClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFinal").finish_non_exhaustive()
    }
}

fn utf8(msg: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// Splits `k=value` with a single-letter key.
fn attr(part: &str) -> Result<(u8, &str), ScramError> {
    let b = part.as_bytes();
    if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
        return Err(ScramError::Malformed("expected attribute=value"));
    }
    Ok((b[0], &part[2..]))
}

fn expect(part: Option<&str>, key: u8) -> Result<&str, ScramError> {
    let (k, v) = attr(part.ok_or(ScramError::Malformed("message too short"))?)?;
    if k == b'm' {
        // RFC 5802: a mandatory extension we don't know means failure.
        return Err(ScramError::Extension);
    }
    if k != key {
        return Err(ScramError::Malformed("unexpected attribute"));
    }
    Ok(v)
}

/// Decodes a `saslname` (`=2C` is ',' and `=3D` is '='; a bare '=' is invalid).
fn sasl_name(raw: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest
            .get(i..i + 3)
            .ok_or(ScramError::Malformed("bad escape"))?;
        out.push(match esc {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(ScramError::Malformed("bad escape")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

/// Encodes a user name as a `saslname`.
pub fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = utf8(msg)?;
    let mut parts = text.splitn(3, ',');
    let cbind = parts.next().unwrap_or_default();
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
    }
    let authzid = match parts.next().ok_or(ScramError::Malformed("no GS2 header"))? {
        "" => None,
        a => Some(sasl_name(
            a.strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authzid"))?,
        )?),
    };
    let bare = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut fields = bare.split(',');
    let username = sasl_name(expect(fields.next(), b'n')?)?;
    let nonce = expect(fields.next(), b'r')?;
    if !valid_nonce(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    if fields.next().is_some() {
        return Err(ScramError::Extension);
    }
    if authzid.is_some_and(|a| a != username) {
        return Err(ScramError::AuthzId);
    }
    Ok(ClientFirst {
        gs2_header,
        username,
        nonce: nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

pub fn parse_client_final(msg: &[u8]) -> Result<ClientFinal, ScramError> {
    let text = utf8(msg)?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("no proof"))?;
    let mut fields = without_proof.split(',');
    let cb = expect(fields.next(), b'c')?;
    let nonce = expect(fields.next(), b'r')?;
    if fields.next().is_some() {
        return Err(ScramError::Extension);
    }
    let channel_binding = B64
        .decode(cb)
        .map_err(|_| ScramError::Malformed("bad channel binding encoding"))?;
    let proof = B64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("bad proof encoding"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce: nonce.to_owned(),
        proof,
        without_proof: without_proof.to_owned(),
    })
}

/// The server side of one exchange.
pub struct ScramServer {
    mech: Mechanism,
    state: ServerState,
}

// One per connection mid-login, so the size difference is immaterial.
#[allow(clippy::large_enum_variant)]
enum ServerState {
    Initial,
    SentFirst {
        first: ClientFirst,
        server_first: String,
        nonce: String,
        /// `None` for an unknown user: the exchange runs on with a decoy so
        /// that the answer never reveals whether the user exists.
        credential: Option<Credential>,
    },
    Done,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mech.name())
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    pub fn new(mech: Mechanism) -> ScramServer {
        ScramServer {
            mech,
            state: ServerState::Initial,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The user name from the client's first message, once seen.
    pub fn username(&self) -> Option<&str> {
        match &self.state {
            ServerState::SentFirst { first, .. } => Some(&first.username),
            _ => None,
        }
    }

    /// Answers the client's first message. `lookup` returns the user's
    /// credential; `decoy` gives the salt and iteration count shown for a
    /// user that does not exist (stable per user name). `server_nonce` is
    /// fresh randomness.
    pub fn first(
        &mut self,
        msg: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<Credential>,
        decoy: impl FnOnce(&str) -> (Vec<u8>, u32),
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::State);
        }
        let first = parse_client_first(msg)?;
        let credential = lookup(&first.username);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => decoy(&first.username),
        };
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let out = server_first.clone().into_bytes();
        self.state = ServerState::SentFirst {
            first,
            server_first,
            nonce,
            credential,
        };
        Ok(out)
    }

    /// Checks the client's proof; on success returns the server-final
    /// message and the authenticated user name.
    pub fn finish(&mut self, msg: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ServerState::SentFirst {
            first,
            server_first,
            nonce,
            credential,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::State);
        };
        let fin = parse_client_final(msg)?;
        if fin.channel_binding != first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        // Kafka checks only that the echoed nonce ends with the combined
        // one: librdkafka prepends its own nonce once more. Nonces are not
        // secret, and the proof covers the message as sent.
        if !fin.nonce.ends_with(nonce.as_str()) {
            return Err(ScramError::Nonce);
        }
        let auth_message = format!("{},{server_first},{}", first.bare, fin.without_proof);
        let known = credential.is_some();
        let cred = credential.unwrap_or_else(|| Credential::decoy(self.mech));
        let signature = self.mech.hmac(&cred.stored_key, auth_message.as_bytes());
        if fin.proof.len() != signature.len() {
            return Err(ScramError::Proof);
        }
        let client_key: Vec<u8> = fin
            .proof
            .iter()
            .zip(&signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let matches = self
            .mech
            .hash(&client_key)
            .ct_eq(&cred.stored_key)
            .unwrap_u8()
            == 1;
        if !(known && matches) {
            return Err(ScramError::Proof);
        }
        let server_signature = self.mech.hmac(&cred.server_key, auth_message.as_bytes());
        Ok((
            format!("v={}", B64.encode(server_signature)).into_bytes(),
            first.username,
        ))
    }
}

/// The client side, for the CLI and tests.
pub struct ScramClient {
    mech: Mechanism,
    username: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mech.name())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    pub fn new(mech: Mechanism, username: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            mech,
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={},r={nonce}", escape_name(username)),
            server_signature: None,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server's first message with the client-final message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = utf8(server_first)?;
        let mut fields = text.split(',');
        let nonce = expect(fields.next(), b'r')?;
        let salt = B64
            .decode(expect(fields.next(), b's')?)
            .map_err(|_| ScramError::Malformed("bad salt"))?;
        let iterations: u32 = expect(fields.next(), b'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("bad iteration count"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salted = self
            .mech
            .salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = self.mech.hmac(&salted, b"Client Key");
        let stored_key = self.mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = self.mech.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = self.mech.hmac(&salted, b"Server Key");
        self.server_signature = Some(self.mech.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies the server's final message (mutual authentication).
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = utf8(server_final)?;
        let v = text.strip_prefix("v=").ok_or(ScramError::Proof)?;
        let got = B64
            .decode(v)
            .map_err(|_| ScramError::Malformed("bad verifier"))?;
        let want = self.server_signature.as_ref().ok_or(ScramError::State)?;
        if got.ct_eq(want).unwrap_u8() == 1 {
            Ok(())
        } else {
            Err(ScramError::Proof)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3.
    const C1: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const S1: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const C2: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const S2: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    const SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_credential() -> Credential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        Credential::from_password(Mechanism::Sha256, "pencil", &salt, 4096)
    }

    fn server_after_first() -> ScramServer {
        let mut s = ScramServer::new(Mechanism::Sha256);
        let out = s
            .first(
                C1.as_bytes(),
                SNONCE,
                |u| (u == "user").then(rfc_credential),
                |_| unreachable!(),
            )
            .unwrap();
        assert_eq!(out, S1.as_bytes());
        s
    }

    #[test]
    fn rfc7677_server_side() {
        let mut s = server_after_first();
        let (fin, user) = s.finish(C2.as_bytes()).unwrap();
        assert_eq!(fin, S2.as_bytes());
        assert_eq!(user, "user");
    }

    #[test]
    fn rfc7677_client_side() {
        let mut c = ScramClient::new(Mechanism::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), C1.as_bytes());
        assert_eq!(c.client_final(S1.as_bytes()).unwrap(), C2.as_bytes());
        c.verify_server_final(S2.as_bytes()).unwrap();
        assert_eq!(c.verify_server_final(b"v=AAAA"), Err(ScramError::Proof));
    }

    #[test]
    fn bad_proof_and_nonce_mismatch_fail() {
        let mut s = server_after_first();
        let bad = C2.replace("p=dHzb", "p=dHzc");
        assert_eq!(s.finish(bad.as_bytes()), Err(ScramError::Proof));
        let mut s = server_after_first();
        let bad = C2.replace("$k0,", "$k1,");
        assert_eq!(s.finish(bad.as_bytes()), Err(ScramError::Nonce));
        let mut s = server_after_first();
        let bad = C2.replace("r=rOpr", "r=Opr");
        assert_eq!(s.finish(bad.as_bytes()), Err(ScramError::Nonce));
        let mut s = server_after_first();
        let bad = C2.replace("c=biws", "c=eSws");
        assert_eq!(s.finish(bad.as_bytes()), Err(ScramError::ChannelBinding));
        // A second final message is out of order.
        let mut s = server_after_first();
        s.finish(C2.as_bytes()).unwrap();
        assert_eq!(s.finish(C2.as_bytes()), Err(ScramError::State));
    }

    #[test]
    fn unknown_user_fails_only_at_the_proof() {
        let mut s = ScramServer::new(Mechanism::Sha256);
        let first = s
            .first(C1.as_bytes(), SNONCE, |_| None, |_| (vec![1; 16], 4096))
            .unwrap();
        assert!(first.starts_with(b"r=rOprNGfwEbeRWgbNEkqO%hvY"));
        assert_eq!(s.finish(C2.as_bytes()), Err(ScramError::Proof));
    }

    #[test]
    fn malformed_and_unknown_attributes_are_refused() {
        for (msg, want) in [
            ("", ScramError::Malformed("bad GS2 channel binding flag")),
            ("p=tls-unique,,n=u,r=x", ScramError::ChannelBinding),
            ("n,,m=ext,n=u,r=x", ScramError::Extension),
            ("n,,n=u,r=x,x=unknown", ScramError::Extension),
            ("n,,r=x,n=u", ScramError::Malformed("unexpected attribute")),
            ("n,,n=u", ScramError::Malformed("message too short")),
            ("n,,n=a=2Xb,r=x", ScramError::Malformed("bad escape")),
            ("n,,n=,r=x", ScramError::Malformed("empty user name")),
            ("n,,n=u,r=a,b", ScramError::Extension),
            ("n,a=other,n=u,r=x", ScramError::AuthzId),
            ("n,,n=u,r=", ScramError::Malformed("bad nonce")),
            (
                "n,,n=u,rx",
                ScramError::Malformed("expected attribute=value"),
            ),
        ] {
            assert_eq!(parse_client_first(msg.as_bytes()), Err(want), "{msg:?}");
        }
        assert_eq!(
            parse_client_first(&[b'n', b',', b',', 0xff]),
            Err(ScramError::Malformed("not UTF-8"))
        );
        let ok = parse_client_first(b"y,a=a=3Db,n=a=3Db,r=nonce").unwrap();
        assert_eq!(ok.username, "a=b");
        assert_eq!(ok.gs2_header, "y,a=a=3Db,");
        for msg in [
            "c=biws,r=x",
            "c=biws,r=x,e=1,p=AAAA",
            "r=x,c=biws,p=AAAA",
            "c=!!,r=x,p=AAAA",
            "c=biws,r=x,p=!!",
        ] {
            assert!(parse_client_final(msg.as_bytes()).is_err(), "{msg:?}");
        }
    }

    #[test]
    fn sha512_round_trip_and_debug_hides_keys() {
        let cred = Credential::from_password(Mechanism::Sha512, "s3cret", b"salty", 4096);
        let mut c = ScramClient::new(Mechanism::Sha512, "al,ice", "s3cret", "abc");
        let mut s = ScramServer::new(Mechanism::Sha512);
        let sf = s
            .first(
                &c.client_first(),
                "xyz",
                |u| (u == "al,ice").then(|| cred.clone()),
                |_| unreachable!(),
            )
            .unwrap();
        let cf = c.client_final(&sf).unwrap();
        let (fin, user) = s.finish(&cf).unwrap();
        c.verify_server_final(&fin).unwrap();
        assert_eq!(user, "al,ice");
        let dbg = format!("{cred:?} {c:?} {s:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("stored"), "{dbg}");
    }
}
