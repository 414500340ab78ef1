//! Validation of identifiers before they touch the log or a path
//! (PROTOCOL §2). Each check returns a human reason on failure; the caller
//! attaches the field name.

/// Longest session, message or order id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest resource, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 1024;
/// Longest short text field (role, task, phase, kind, ticket), in bytes.
pub const MAX_TEXT_BYTES: usize = 256;

/// Parses a ULID strictly: 26 Crockford base32 characters whose value
/// fits 128 bits, so the first is `0`–`7` (ULID spec, "Overflow Errors
/// when Parsing Base32 Strings"). A lenient parse would read `8ZZZ…` as
/// `0ZZZ…` and make two distinct idempotency keys collide.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_ulid(s: &str) -> Result<ulid::Ulid, String> {
    if s.len() != ulid::ULID_LEN {
        return Err(format!(
            "{s:?} is not a ULID: it must be {} characters, not {}",
            ulid::ULID_LEN,
            s.len()
        ));
    }
    if !matches!(s.as_bytes()[0], b'0'..=b'7') {
        return Err(format!(
            "{s:?} is not a ULID: its first character must be 0-7 (larger values overflow 128 bits)"
        ));
    }
    ulid::Ulid::from_string(s).map_err(|e| format!("{s:?} is not a ULID: {e}"))
}

/// serde's `deserialize_with` for an optional `tx_id`: absent or `null`
/// is `None`, a string must pass [`parse_ulid`].
///
/// # Errors
/// The deserializer's error carrying [`parse_ulid`]'s sentence.
pub fn deserialize_opt_ulid<'de, D>(d: D) -> Result<Option<ulid::Ulid>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_ulid(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Checks a `session_id`, `msg_id` or `order_id`: 1–128 bytes of
/// `A-Z a-z 0-9 . _ - : @`, not `.` or `..`.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("is {} bytes, at most {MAX_ID_BYTES}", id.len()));
    }
    if id == "." || id == ".." {
        return Err(format!("{id:?} is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(format!("contains {c:?}; allowed are A-Z a-z 0-9 . _ - : @"));
    }
    Ok(())
}

/// A lock `resource` the way users write paths, made canonical
/// (PROTOCOL §2): runs of `/` become one, `.` segments and a trailing `/`
/// go, a leading `/` (an absolute path) stays. `./src//a.rs` and
/// `src/./a.rs/` are both `src/a.rs`. `..` is kept (and then refused by
/// [`check_resource`]): resolving it would need the file system.
///
/// Idempotent, and the identity on every resource [`check_resource`]
/// accepts; property-tested in `tests/resources.rs`.
pub fn normalize_resource(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    if r.starts_with('/') {
        out.push('/');
    }
    for seg in r.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if !out.is_empty() && !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(seg);
    }
    out
}

/// Checks a (normalised) lock `resource`: 1–1024 bytes of UTF-8, no
/// control characters, no empty, `.` or `..` segment; a leading `/` (an
/// absolute path) is allowed.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_resource(r: &str) -> Result<(), String> {
    if r.is_empty() {
        return Err("must not be empty".into());
    }
    if r.len() > MAX_RESOURCE_BYTES {
        return Err(format!(
            "is {} bytes, at most {MAX_RESOURCE_BYTES}",
            r.len()
        ));
    }
    if r.chars().any(char::is_control) {
        return Err("contains a control character (NUL, newline, …)".into());
    }
    let rel = r.strip_prefix('/').unwrap_or(r);
    if rel.is_empty() {
        return Err("names no path after '/'".into());
    }
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("has an empty, '.' or '..' path segment".into());
    }
    Ok(())
}

/// Checks a custom kind: `x.` then 1–64 bytes of `a-z 0-9 . _ -`.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_custom_kind(kind: &str) -> Result<(), String> {
    let Some(rest) = kind.strip_prefix("x.") else {
        return Err("custom kinds start with \"x.\"".into());
    };
    if rest.is_empty() || rest.len() > 64 {
        return Err("needs 1-64 characters after \"x.\"".into());
    }
    if !rest
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err("allowed after \"x.\" are a-z 0-9 . _ -".into());
    }
    Ok(())
}

/// Checks a short text field: at most 256 bytes, no control characters
/// and no bidirectional override or isolate (U+202A–U+202E,
/// U+2066–U+2069), which would make a terminal show the text reordered.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn check_text(s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(format!("is {} bytes, at most {MAX_TEXT_BYTES}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if let Some(c) = s.chars().find(|c| is_bidi_control(*c)) {
        return Err(format!(
            "contains the bidirectional control U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether `c` is a bidirectional embedding, override or isolate
/// (U+202A–U+202E, U+2066–U+2069; Unicode TR9): invisible characters that
/// make a terminal display the text around them in another order.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` made safe to print on a terminal: every control character (C0,
/// DEL, C1 — so no escape sequence: no OSC title or clipboard write, no
/// screen clear, no 8-bit CSI) and every bidirectional control is written
/// as its escape (`\u{1b}`), so it shows and does nothing. With
/// `keep_lines`, newlines and tabs stay (a multi-line message body).
pub fn terminal_safe(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !(keep_lines && (c == '\n' || c == '\t'))) || is_bidi_control(c)
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Matches `text` against a glob where `*` stands for any run of characters
/// (including none) and every other character for itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Iterative wildcard matching with one backtrack point: linear in
    // practice, no allocation.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {

    #[test]
    fn terminal_safe_shows_escape_sequences_and_bidi_controls_inert() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}]52;c;Y2xpcA==\u{7}\u{1b}[2J\u{9b}31m\u{1b}P1$r\u{1b}\\\u{202e}txt.exe";
        let safe = terminal_safe(hostile, false);
        assert!(
            !safe.chars().any(|c| c.is_control() || is_bidi_control(c)),
            "{safe}"
        );
        assert!(safe.contains("\\u{1b}]0;pwned\\u{7}"), "{safe}");
        assert!(
            safe.contains("\\u{9b}31m") && safe.contains("\\u{202e}txt.exe"),
            "{safe}"
        );
        assert_eq!(terminal_safe("two\nlines\tok", true), "two\nlines\tok");
        assert_eq!(terminal_safe("two\nlines", false), "two\\u{a}lines");
        assert!(matches!(
            terminal_safe("plain text", false),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(check_text("abc\u{202e}def").is_err());
        assert!(check_text("naïve — ok").is_ok());
    }

    use super::*;

    #[test]
    fn ulids_are_parsed_strictly() {
        let id = ulid::Ulid::new();
        assert_eq!(parse_ulid(&id.to_string()), Ok(id));
        assert_eq!(
            parse_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").map(|u| u.0),
            Ok(u128::MAX)
        );
        for bad in [
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "01J0000000000000000000000",
            "01J00000000000000000000000X",
            "01J000000000000000000000U!",
            "",
        ] {
            assert!(parse_ulid(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("claude-pid-91952").is_ok());
        assert!(check_id("a@b:c.d_e").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resources() {
        assert!(check_resource("src/main.rs").is_ok());
        assert!(check_resource("db/schema.sql").is_ok());
        assert!(check_resource("/srv/repo/a.rs").is_ok(), "absolute paths");
        // Unnormalised spellings are refused here; the daemon normalises
        // them first (`normalize_resource`).
        for bad in [
            "", "/", "//a", "a/../b", "..", "a//b", "a\0b", "a/./b", "a/",
        ] {
            assert!(check_resource(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds() {
        assert!(check_custom_kind("x.deploy.started").is_ok());
        for bad in ["deploy", "x.", "x.UP", "lock.acquire"] {
            assert!(check_custom_kind(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("lock.*", "lock.acquire"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*.ack", "inbox.ack"));
        assert!(glob_match("x.*.started", "x.deploy.started"));
        assert!(!glob_match("lock.*", "session.register"));
        assert!(!glob_match("lock", "lock.acquire"));
    }
}
