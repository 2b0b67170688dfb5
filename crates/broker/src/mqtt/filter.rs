//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7, 5.0 §4.7): which
//! are valid, whether a name matches a filter, and whether two filters can
//! match a common name (which mapped Kafka topics a subscription reads).
//!
//! Pure functions over `&str`; the one rule beyond the spec is that topics
//! starting with `$` are never matched by a filter starting with a
//! wildcard, as the spec asks of servers.

/// The longest topic name or filter accepted (the MQTT string limit).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Empty,
    TooLong,
    /// A wildcard in a topic name (only filters may have them).
    Wildcard,
    /// `#` not alone in the last level, or `+` not alone in its level.
    MisplacedWildcard,
    /// U+0000 is forbidden in every MQTT string.
    Nul,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::Empty => "empty topic",
            Invalid::TooLong => "topic longer than 65535 bytes",
            Invalid::Wildcard => "wildcard in a topic name",
            Invalid::MisplacedWildcard => "'#' must be the last level and '+' a whole level",
            Invalid::Nul => "NUL character in a topic",
        })
    }
}

fn common(s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(Invalid::TooLong);
    }
    if s.contains('\0') {
        return Err(Invalid::Nul);
    }
    Ok(())
}

/// A topic name a client may publish to.
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    common(name)?;
    if name.contains(['+', '#']) {
        return Err(Invalid::Wildcard);
    }
    Ok(())
}

/// A topic filter a client may subscribe to.
pub fn validate_filter(filter: &str) -> Result<(), Invalid> {
    common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let hash = level.contains('#');
        let plus = level.contains('+');
        if (hash && (*level != "#" || i != last)) || (plus && *level != "+") {
            return Err(Invalid::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Whether `name` (valid, no wildcards) matches `filter` (valid).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether some topic name matches both filters.
pub fn overlap(a: &str, b: &str) -> bool {
    // A `$` name is matched only by filters naming that first level.
    let dollar = |x: &str| x.starts_with('$');
    let wild = |x: &str| x.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// The levels of `name` that `filter`'s wildcards matched, in order: one
/// entry per `+`, then the rest of the name for a trailing `#` (empty when
/// `#` matched the parent level alone). `None` when it does not match.
pub fn captures<'a>(filter: &str, name: &'a str) -> Option<Vec<&'a str>> {
    if !matches(filter, name) {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = name;
    for level in filter.split('/') {
        if level == "#" {
            out.push(rest);
            return Some(out);
        }
        let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if level == "+" {
            out.push(head);
        }
        rest = tail;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters_are_checked() {
        assert!(validate_name("a/b/c").is_ok());
        assert!(validate_name("/").is_ok());
        assert_eq!(validate_name(""), Err(Invalid::Empty));
        assert_eq!(validate_name("a/+"), Err(Invalid::Wildcard));
        assert_eq!(validate_name("a\0b"), Err(Invalid::Nul));
        for ok in ["#", "+", "a/#", "+/b/+", "a/+/#", "/+"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a+/b", "a/b+", "##"] {
            assert_eq!(
                validate_filter(bad),
                Err(Invalid::MisplacedWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+", "sport/tennis/player1"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor", "$SYS/monitor"));
        assert!(matches("$SYS/#", "$SYS/monitor"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn overlap_is_symmetric_and_exact_on_examples() {
        for (a, b, want) in [
            ("factory/+/line/#", "factory/7/line/3", true),
            ("factory/+/line/#", "factory/#", true),
            ("factory/+/line/#", "#", true),
            ("factory/+/line/#", "factory/7/oven", false),
            ("a/+", "+/b", true),
            ("a/+", "a/b/c", false),
            ("$SYS/#", "#", false),
            ("a", "a", true),
            ("a", "b", false),
        ] {
            assert_eq!(overlap(a, b), want, "{a} {b}");
            assert_eq!(overlap(b, a), want, "{b} {a}");
        }
    }

    #[test]
    fn captures_name_the_wildcard_levels() {
        assert_eq!(
            captures("factory/+/line/#", "factory/7/line/3/temp"),
            Some(vec!["7", "3/temp"])
        );
        assert_eq!(
            captures("factory/+/line/#", "factory/7/line"),
            Some(vec!["7", ""])
        );
        assert_eq!(captures("a/+", "a/x"), Some(vec!["x"]));
        assert_eq!(captures("a/+", "b/x"), None);
    }

    proptest::proptest! {
        #[test]
        fn a_name_matching_both_filters_means_they_overlap(
            name in proptest::collection::vec("[ab$]{0,2}", 1..4),
            fa in proptest::collection::vec(proptest::prop_oneof!["[ab]{1}", proptest::strategy::Just("+".to_string())], 1..4),
            fb_hash in proptest::bool::ANY,
        ) {
            let name = name.join("/");
            let a = fa.join("/");
            let b = if fb_hash { "#".to_owned() } else { name.clone() };
            if validate_name(&name).is_ok() && matches(&a, &name) && matches(&b, &name) {
                proptest::prop_assert!(overlap(&a, &b));
            }
        }
    }
}
