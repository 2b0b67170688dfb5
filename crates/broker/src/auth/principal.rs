//! Principals from client certificates: the subject DN, formatted as Java's
//! `X500Principal.getName()` prints it (RFC 2253), mapped through Kafka's
//! `ssl.principal.mapping.rules` (`RULE:pattern/replacement/[LU]` and
//! `DEFAULT`).

use std::fmt::Write as _;

use regex::Regex;

/// One mapping rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// The full DN, unchanged.
    Default,
    Replace {
        /// Anchored: like Java's `Matcher.matches()`, the whole DN must match.
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Keep,
    Lower,
    Upper,
}

/// An ordered list of rules; the first that matches wins.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

/// Splits `pattern/replacement/flags` on unescaped '/'; `\/` stands for '/'.
fn split_rule(body: &str) -> Option<(String, String, &str)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if body[i + 1..].starts_with('/') => {
                cur.push('/');
                chars.next();
            }
            '/' => {
                parts.push(std::mem::take(&mut cur));
                if parts.len() == 2 {
                    return Some((parts.remove(0), parts.remove(0), &body[i + 1..]));
                }
            }
            c => cur.push(c),
        }
    }
    None
}

/// Java's `$1` group references become the regex crate's `${1}`, so that a
/// letter after the number is not read as part of a group name.
fn replacement_syntax(java: &str) -> String {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl PrincipalMapper {
    /// Parses rules, each `DEFAULT` or `RULE:pattern/replacement/[LU]`.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<PrincipalMapper, String> {
        let mut out = Vec::new();
        for raw in rules {
            let raw = raw.as_ref().trim();
            if raw == "DEFAULT" {
                out.push(Rule::Default);
                continue;
            }
            let body = raw.strip_prefix("RULE:").ok_or_else(|| {
                format!("invalid rule '{raw}': expected DEFAULT or RULE:pattern/replacement/[LU]")
            })?;
            let (pattern, replacement, flags) = split_rule(body).ok_or_else(|| {
                format!("invalid rule '{raw}': expected RULE:pattern/replacement/[LU]")
            })?;
            let case = match flags.trim() {
                "" => Case::Keep,
                "L" => Case::Lower,
                "U" => Case::Upper,
                f => return Err(format!("invalid rule '{raw}': unknown flag '{f}' (L or U)")),
            };
            let pattern = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("invalid rule '{raw}': {e}"))?;
            out.push(Rule::Replace {
                pattern,
                replacement: replacement_syntax(&replacement),
                case,
            });
        }
        if out.is_empty() {
            out.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules: out })
    }

    /// The principal name for `dn`, or `None` when no rule applies (Kafka
    /// then fails the connection).
    pub fn map(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::Default => Some(dn.to_owned()),
            Rule::Replace {
                pattern,
                replacement,
                case,
            } => {
                if !pattern.is_match(dn) {
                    return None;
                }
                let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                Some(match case {
                    Case::Keep => name,
                    Case::Lower => name.to_lowercase(),
                    Case::Upper => name.to_uppercase(),
                })
            }
        })
    }
}

/// A DER element: tag and contents.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn oid_string(bytes: &[u8]) -> Option<String> {
    let (&first, rest) = bytes.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut acc: u64 = 0;
    for &b in rest {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            let _ = write!(out, ".{acc}");
            acc = 0;
        }
    }
    Some(out)
}

/// Keywords Java prints by name in RFC 2253 form; others print as OIDs.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn decode_string(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString
        0x0c | 0x13 | 0x16 | 0x12 => std::str::from_utf8(v).ok().map(str::to_owned),
        // TeletexString: treated as Latin-1, as Java does in practice.
        0x14 => Some(v.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2 big endian.
        0x1e if v.len() % 2 == 0 => {
            let units: Vec<u16> = v
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 2253 escaping of an attribute value.
fn escape_value(v: &str, out: &mut String) {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Formats a DER `Name` as RFC 2253: last RDN first, AVAs joined by '+'.
pub fn format_name(name_contents: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    let mut rest = name_contents;
    while !rest.is_empty() {
        let (tag, set, next) = tlv(rest)?;
        if tag != 0x31 {
            return None;
        }
        rest = next;
        let mut avas = Vec::new();
        let mut s = set;
        while !s.is_empty() {
            let (tag, seq, next) = tlv(s)?;
            if tag != 0x30 {
                return None;
            }
            s = next;
            let (otag, oid, after) = tlv(seq)?;
            if otag != 0x06 {
                return None;
            }
            let oid = oid_string(oid)?;
            let (vtag, value, _) = tlv(after)?;
            let mut ava = String::new();
            if let (Some(k), Some(text)) = (keyword(&oid), decode_string(vtag, value)) {
                ava.push_str(k);
                ava.push('=');
                escape_value(&text, &mut ava);
            } else {
                // Unknown attributes print as OID=#hex of the DER value.
                let encoded = &after[..after.len() - tlv(after)?.2.len()];
                let _ = write!(ava, "{oid}=#");
                for b in encoded {
                    let _ = write!(ava, "{b:02x}");
                }
            }
            avas.push(ava);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// The subject DN of a DER certificate in RFC 2253 form.
pub fn subject_dn(cert_der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(cert_der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, next) = tlv(rest)?;
    if tag == 0xa0 {
        rest = next; // explicit version
    }
    // serial, signature algorithm, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, subject, _) = tlv(rest)?;
    (tag == 0x30).then_some(())?;
    format_name(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DN: &str = "CN=Alice Smith,OU=Telemetry,O=Example\\, Inc.,C=DE";

    #[test]
    fn default_is_the_full_dn() {
        assert_eq!(PrincipalMapper::default().map(DN).as_deref(), Some(DN));
        let empty: [&str; 0] = [];
        assert_eq!(
            PrincipalMapper::parse(&empty).unwrap().map(DN).as_deref(),
            Some(DN)
        );
    }

    #[test]
    fn kafka_rule_syntax() {
        let m = PrincipalMapper::parse(&[
            "RULE:^CN=(.*?),OU=Ops,.*$/$1-ops/",
            "RULE:^CN=([a-zA-Z ]+),OU=(.*?),.*$/$1@$2/L",
            "RULE:^CN=(.*?),.*$/$1/U",
            "DEFAULT",
        ])
        .unwrap();
        assert_eq!(m.map("CN=bob,OU=Ops,O=x").as_deref(), Some("bob-ops"));
        assert_eq!(m.map(DN).as_deref(), Some("alice smith@telemetry"));
        assert_eq!(m.map("CN=1x,O=y").as_deref(), Some("1X"));
        assert_eq!(m.map("O=only").as_deref(), Some("O=only"));
        // Without DEFAULT, a DN no rule matches has no principal.
        let strict = PrincipalMapper::parse(&["RULE:^CN=(.*?),.*$/$1/"]).unwrap();
        assert_eq!(strict.map("O=only"), None);
        // The whole DN must match, like Java's matches().
        let whole = PrincipalMapper::parse(&["RULE:CN=a/x/"]).unwrap();
        assert_eq!(whole.map("CN=a,O=b"), None);
        // Escaped slashes and a group number followed by a letter.
        let m = PrincipalMapper::parse(&[r"RULE:^CN=(.*)$/svc\/$1x/"]).unwrap();
        assert_eq!(m.map("CN=a").as_deref(), Some("svc/ax"));
    }

    #[test]
    fn bad_rules_are_errors() {
        for bad in ["RULE:abc", "RULE:a/b/Q", "RULE:(/x/", "NOPE"] {
            assert!(PrincipalMapper::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_certificate_subjects_like_java() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "Telemetry");
        dn.push(rcgen::DnType::CommonName, "Alice Smith");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_dn(cert.der()).as_deref(), Some(DN));
    }

    #[test]
    fn escaping_and_unknown_attributes() {
        let mut s = String::new();
        escape_value("#a+b ", &mut s);
        assert_eq!(s, "\\#a\\+b\\ ");
        // SET { SEQ { OID 1.2.840.113549.1.9.1, IA5String "a@b" } }
        let name = [
            0x31, 0x12, 0x30, 0x10, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
            0x01, 0x16, 0x03, b'a', b'@', b'b', 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04,
            0x03, 0x0c, 0x01, b'x',
        ];
        assert_eq!(
            format_name(&name).as_deref(),
            Some("CN=x,1.2.840.113549.1.9.1=#1603614062")
        );
        assert_eq!(subject_dn(&[0x30, 0x05, 0x30]), None);
    }
}
