//! Lock patterns (PROTOCOL §7.1): a lock's resource may be a glob, so one
//! lock can cover a scope (`src/**`, `db/*.sql`).
//!
//! Syntax, per character: `*` matches any run of characters without `/`,
//! `**` any run at all (slashes included, possibly empty), `?` one
//! character other than `/`; every other character matches itself. A
//! resource without `*` or `?` is a plain name and behaves exactly as
//! before patterns existed.
//!
//! Two locks **conflict** when either pattern matches the other's text or
//! some path matches both ([`overlap`]). A pattern lies **within** another
//! ([`within`]) when every path it matches, the other matches too; that is
//! what delegating part of a scope requires.
//!
//! Everything here is pure and decided on token positions: [`intersects`]
//! in |a| × ⌈(|b|+1)/64⌉ word operations, [`matches`] and [`common_path`]
//! in at most (|a|+1)·(|b|+1) steps.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    DStar,
}

impl Tok {
    fn repeats(self) -> bool {
        matches!(self, Tok::Star | Tok::DStar)
    }
    fn accepts(self, c: char) -> bool {
        match self {
            Tok::Lit(x) => x == c,
            Tok::One | Tok::Star => c != '/',
            Tok::DStar => true,
        }
    }
}

fn tokens(p: &str) -> Vec<Tok> {
    let mut out = Vec::with_capacity(p.len());
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Tok::DStar
            }
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    out
}

/// The fewest and most `/` a path matching `r` can hold (`None`: no
/// most, `r` has `**`). `*` and `?` never match `/`, so only `**` adds any.
fn slashes(r: &str) -> (usize, Option<usize>) {
    let fixed = r.bytes().filter(|b| *b == b'/').count();
    (fixed, (!r.contains("**")).then_some(fixed))
}

/// Whether `r` is a pattern (has `*` or `?`) rather than a plain name.
pub fn is_pattern(r: &str) -> bool {
    r.contains(['*', '?'])
}

/// Whether the lock resource `resource` covers `path` (PROTOCOL §7.1): a
/// plain name covers exactly the one path it names, a pattern every path
/// it matches.
///
/// A pattern's literal head and tail ([`literal_prefix`],
/// [`literal_suffix`]) must begin and end the path: a test of a few bytes
/// that settles most locks a path is asked about without the matcher's
/// allocation (a hook asks this of every lock held, on every edit).
pub fn covers(resource: &str, path: &str) -> bool {
    if !is_pattern(resource) {
        return resource == path;
    }
    path.starts_with(literal_prefix(resource))
        && path.ends_with(literal_suffix(resource))
        && matches(resource, path)
}

/// Whether `path` (taken literally) matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let p = tokens(pattern);
    let t: Vec<char> = path.chars().collect();
    let w = t.len() + 1;
    // reach[i * w + j]: p[..i] can match t[..j].
    let mut reach = vec![false; (p.len() + 1) * w];
    reach[0] = true;
    for i in 0..=p.len() {
        for j in 0..=t.len() {
            if !reach[i * w + j] || i == p.len() {
                continue;
            }
            let tok = p[i];
            if tok.repeats() {
                reach[(i + 1) * w + j] = true;
            }
            if j < t.len() && tok.accepts(t[j]) {
                if tok.repeats() {
                    reach[i * w + j + 1] = true;
                } else {
                    reach[(i + 1) * w + j + 1] = true;
                }
            }
        }
    }
    reach[p.len() * w + t.len()]
}

/// A path both patterns match, if there is one (the shortest in token
/// steps). Wildcards are filled with `x`.
pub fn common_path(a: &str, b: &str) -> Option<String> {
    let (a, b) = (tokens(a), tokens(b));
    let w = b.len() + 1;
    // prev[state] = (previous state, char emitted on the way, if any).
    let mut prev: Vec<Option<(usize, Option<char>)>> = vec![None; (a.len() + 1) * w];
    let start = 0;
    let goal = a.len() * w + b.len();
    prev[start] = Some((start, None));
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(s) = queue.pop_front() {
        if s == goal {
            let mut out = Vec::new();
            let mut cur = s;
            while cur != start {
                let Some((p, c)) = prev[cur] else { break };
                out.extend(c);
                cur = p;
            }
            out.reverse();
            return Some(out.into_iter().collect());
        }
        let (i, j) = (s / w, s % w);
        let mut next = Vec::with_capacity(3);
        if i < a.len() && a[i].repeats() {
            next.push(((i + 1) * w + j, None));
        }
        if j < b.len() && b[j].repeats() {
            next.push((i * w + j + 1, None));
        }
        if i < a.len() && j < b.len() {
            let c = match (a[i], b[j]) {
                (Tok::Lit(x), _) | (_, Tok::Lit(x)) => Some(x),
                _ => Some('x'),
            }
            .filter(|&c| a[i].accepts(c) && b[j].accepts(c));
            if let Some(c) = c {
                let ni = if a[i].repeats() { i } else { i + 1 };
                let nj = if b[j].repeats() { j } else { j + 1 };
                if (ni, nj) != (i, j) {
                    next.push((ni * w + nj, Some(c)));
                }
            }
        }
        for (n, c) in next {
            if prev[n].is_none() {
                prev[n] = Some((s, c));
                queue.push_back(n);
            }
        }
    }
    None
}

/// The literal text a pattern starts with: everything before its first
/// `*` or `?` (all of a plain name). Every path the pattern matches, and
/// its own text, starts with it.
pub fn literal_prefix(r: &str) -> &str {
    r.find(['*', '?']).map_or(r, |i| &r[..i])
}

/// The literal text a pattern ends with: everything after its last `*` or
/// `?` (all of a plain name). Every path the pattern matches, and its own
/// text, ends with it.
pub fn literal_suffix(r: &str) -> &str {
    r.rfind(['*', '?']).map_or(r, |i| &r[i + 1..])
}

/// Whether a path matches both patterns: [`common_path`] without building
/// the path.
///
/// How: the product of the two patterns' token positions, `(i, j)`, is
/// walked row by row (one row per token of `a`), each row a bit set over
/// the positions of `b`. Moves go right within a row (a `*` of `b`
/// skipped, or a `*` of `a` eating a character `b[j]` allows), down (a
/// `*` of `a` skipped, or `a[i]` eating a character a `*` of `b` allows)
/// or diagonally (both eat one character); so a row is the row above
/// moved down and diagonally (a shift), then closed to the right (runs of
/// allowed moves, carried as in binary addition). The cost is
/// |a| × ⌈(|b|+1)/64⌉ word operations — about 1,300 for two 256-byte
/// patterns, where a search of the positions visits up to 65,000 — so
/// comparing with thousands of held patterns stays cheap (issue 34 item 4).
pub fn intersects(a: &str, b: &str) -> bool {
    let (a, b) = (tokens(a), tokens(b));
    let words = (b.len() + 1).div_ceil(64);
    let masks = Masks::of(&b, words);
    let mut row = vec![0u64; words];
    row[0] = 1;
    let mut next = vec![0u64; words];
    let mut compat = vec![0u64; words];
    let mut right = vec![0u64; words];
    for &tok in &a {
        // Row i, closed to the right.
        masks.compatible(tok, &mut compat);
        for w in 0..words {
            right[w] = masks.repeats[w]
                | if tok.repeats() {
                    compat[w] & !masks.repeats[w]
                } else {
                    0
                };
        }
        close_right(&mut row, &right);
        if row.iter().all(|w| *w == 0) {
            return false;
        }
        // Row i + 1: down and diagonal moves out of row i.
        let mut carry = 0u64;
        for w in 0..words {
            let reach = row[w];
            let (down, diag) = if tok.repeats() {
                (reach, 0)
            } else {
                (
                    reach & compat[w] & masks.repeats[w],
                    reach & compat[w] & !masks.repeats[w],
                )
            };
            next[w] = down | (diag << 1) | carry;
            carry = diag >> 63;
        }
        std::mem::swap(&mut row, &mut next);
    }
    // The last row (all of `a` used): only `*`s of `b` may remain.
    close_right(&mut row, &masks.repeats);
    let goal = b.len();
    row[goal / 64] & (1 << (goal % 64)) != 0
}

/// Sets in `row` every position reachable from one already set by moves
/// `j → j+1` where `allowed` has `j`: `(x & m) + m` carries through each
/// run of `m` that starts at or below a set bit and lands one past it,
/// and `^ m` turns that carry into the positions passed.
fn close_right(row: &mut [u64], allowed: &[u64]) {
    let mut carry = false;
    for (x, &m) in row.iter_mut().zip(allowed) {
        let (sum, c1) = (*x & m).overflowing_add(m);
        let (sum, c2) = sum.overflowing_add(u64::from(carry));
        carry = c1 || c2;
        *x |= sum ^ m;
    }
}

/// Bit sets over the token positions of a pattern `b`, for [`intersects`].
struct Masks {
    words: usize,
    /// Positions of `*` and `**`.
    repeats: Vec<u64>,
    /// Positions of `?` and `*` (any character but `/`).
    one_or_star: Vec<u64>,
    /// Positions of `**` (any character).
    dstar: Vec<u64>,
    /// Positions of literals other than `/`.
    plain_lits: Vec<u64>,
    /// Each literal character of `b`, sorted, with its positions
    /// (`words` words each in `by_char_bits`).
    by_char: Vec<char>,
    by_char_bits: Vec<u64>,
}

impl Masks {
    fn of(b: &[Tok], words: usize) -> Self {
        let mut m = Masks {
            words,
            repeats: vec![0; words],
            one_or_star: vec![0; words],
            dstar: vec![0; words],
            plain_lits: vec![0; words],
            by_char: Vec::new(),
            by_char_bits: Vec::new(),
        };
        let mut chars: Vec<char> = b
            .iter()
            .filter_map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        chars.sort_unstable();
        chars.dedup();
        m.by_char_bits = vec![0; chars.len() * words];
        m.by_char = chars;
        for (j, t) in b.iter().enumerate() {
            let (w, bit) = (j / 64, 1u64 << (j % 64));
            match t {
                Tok::Lit(c) => {
                    if *c != '/' {
                        m.plain_lits[w] |= bit;
                    }
                    if let Ok(k) = m.by_char.binary_search(c) {
                        m.by_char_bits[k * words + w] |= bit;
                    }
                }
                Tok::One => m.one_or_star[w] |= bit,
                Tok::Star => {
                    m.one_or_star[w] |= bit;
                    m.repeats[w] |= bit;
                }
                Tok::DStar => {
                    m.dstar[w] |= bit;
                    m.repeats[w] |= bit;
                }
            }
        }
        m
    }

    /// Into `out`: the positions `j` of `b` where some character is taken
    /// by both `tok` and `b[j]`.
    fn compatible(&self, tok: Tok, out: &mut [u64]) {
        for (w, out) in out.iter_mut().enumerate() {
            *out = match tok {
                // Any character: everything in `b` takes one.
                Tok::DStar => {
                    self.repeats[w] | self.one_or_star[w] | self.plain_lits[w] | self.lit_slash(w)
                }
                // Any character but `/`: every wildcard, every other literal.
                Tok::One | Tok::Star => self.one_or_star[w] | self.dstar[w] | self.plain_lits[w],
                Tok::Lit(c) => {
                    let same = self
                        .by_char
                        .binary_search(&c)
                        .map_or(0, |k| self.by_char_bits[k * self.words + w]);
                    let wild = if c == '/' { 0 } else { self.one_or_star[w] };
                    same | wild | self.dstar[w]
                }
            };
        }
    }

    /// The positions of `/` literals in word `w`.
    fn lit_slash(&self, w: usize) -> u64 {
        self.by_char
            .binary_search(&'/')
            .map_or(0, |k| self.by_char_bits[k * self.words + w])
    }
}

/// Whether one of `x`, `y` starts with the other.
fn comparable_prefixes(x: &str, y: &str) -> bool {
    x.starts_with(y) || y.starts_with(x)
}

/// Whether one of `x`, `y` ends with the other.
fn comparable_suffixes(x: &str, y: &str) -> bool {
    x.ends_with(y) || y.ends_with(x)
}

/// The conflict rule: `a` and `b` overlap when they are equal, either
/// matches the other's text, or a path matches both.
///
/// Two patterns whose literal prefixes (or suffixes) are not one the
/// other's prefix (suffix) cannot overlap: that is decided in O(|a|+|b|)
/// before the O(|a|·|b|) search, and it is what the state's lock index
/// (`coord_core::LockIndex`) looks up by.
pub fn overlap(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if !is_pattern(a) && !is_pattern(b) {
        return false;
    }
    let (pa, pb) = (literal_prefix(a), literal_prefix(b));
    let (sa, sb) = (literal_suffix(a), literal_suffix(b));
    if !comparable_prefixes(pa, pb) || !comparable_suffixes(sa, sb) {
        return false;
    }
    // A path matching both holds a number of `/` both allow: decided in
    // O(|a|+|b|), it refutes most pairs of different depths (`*x*` and
    // `q/*y`) before the search.
    let ((min_a, max_a), (min_b, max_b)) = (slashes(a), slashes(b));
    if max_a.is_some_and(|m| m < min_b) || max_b.is_some_and(|m| m < min_a) {
        return false;
    }
    // The shorter literal prefix (and suffix) is text both start (end)
    // with: a path matches both iff it carries that text and its middle
    // matches both middles, so only the middles are searched. Every
    // pattern matches its own text, so "one matches the other's text"
    // is a case of "a path matches both".
    let head = pa.len().min(pb.len());
    let tail = sa.len().min(sb.len());
    match (a.len() >= head + tail, b.len() >= head + tail) {
        (true, true) => intersects(&a[head..a.len() - tail], &b[head..b.len() - tail]),
        // A plain name shorter than both literal ends together cannot
        // carry both: only its own prefix/suffix overlap remains.
        _ => intersects(a, b),
    }
}

/// Whether every path `inner` matches is matched by `outer` too (`src/db/**`
/// lies within `src/**`; `src/**` does not lie within `src/*`).
///
/// Decided token by token, so it is sound (a `true` is always right) and
/// exact for the patterns people write; an exotic inclusion it cannot prove
/// (`a*` within `*`… is proven; `?*` within `*?` is not) answers `false`.
pub fn within(inner: &str, outer: &str) -> bool {
    if inner == outer {
        return true;
    }
    let (x, y) = (tokens(inner), tokens(outer));
    let w = y.len() + 1;
    let mut seen = vec![false; (x.len() + 1) * w];
    let mut stack = vec![(0usize, 0usize)];
    // One outer token covers one inner token.
    let covers = |o: Tok, i: Tok| match (o, i) {
        (Tok::DStar, _) => true,
        (Tok::Star, Tok::Lit(c)) | (Tok::One, Tok::Lit(c)) => c != '/',
        (Tok::Star, Tok::One | Tok::Star) => true,
        (Tok::One, Tok::One) => true,
        (Tok::Lit(a), Tok::Lit(b)) => a == b,
        _ => false,
    };
    while let Some((i, j)) = stack.pop() {
        if std::mem::replace(&mut seen[i * w + j], true) {
            continue;
        }
        if i == x.len() && j == y.len() {
            return true;
        }
        if j < y.len() && y[j].repeats() {
            stack.push((i, j + 1));
            if i < x.len() && covers(y[j], x[i]) {
                stack.push((i + 1, j));
            }
        } else if i < x.len() && j < y.len() && covers(y[j], x[i]) && !x[i].repeats() {
            stack.push((i + 1, j + 1));
        }
    }
    false
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_name_covers_its_path_and_a_pattern_what_it_matches() {
        assert!(super::covers("src/a.rs", "src/a.rs"));
        assert!(!super::covers("src/a.rs", "src/a.rsx"));
        assert!(super::covers("src/**", "src/x/y.rs"));
        assert!(!super::covers("src/*", "src/x/y.rs"));
        assert!(super::covers("/abs/*", "/abs/f"));
        assert!(super::covers("**/x.rs", "a/b/x.rs"));
        assert!(!super::covers("src/*.rs", "lib/a.rs"));
    }

    use super::*;

    #[test]
    fn matching() {
        assert!(matches("src/**", "src/a/b.rs"));
        assert!(matches("src/**", "src/"));
        assert!(matches("src/*.rs", "src/main.rs"));
        assert!(!matches("src/*.rs", "src/a/main.rs"));
        assert!(matches("*.sql", "schema.sql"));
        assert!(!matches("*.sql", "db/schema.sql"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "a/c"));
        assert!(matches("plain", "plain"));
        assert!(!matches("plain", "plainer"));
    }

    #[test]
    fn conflicts() {
        assert!(overlap("src/**", "src/main.rs"));
        assert!(overlap("src/**", "src/db/**"));
        assert!(overlap("src/*.rs", "src/m*"));
        assert!(overlap("**/*.sql", "db/*"));
        assert!(!overlap("src/**", "docs/**"));
        assert!(!overlap("*.sql", "*.rs"));
        assert!(!overlap("a", "b"));
        assert_eq!(
            common_path("src/*.rs", "src/m*").as_deref(),
            Some("src/m.rs")
        );
    }

    #[test]
    fn inclusion() {
        assert!(within("src/db/**", "src/**"));
        assert!(within("src/main.rs", "src/**"));
        assert!(within("src/*.rs", "src/**"));
        assert!(within("src/*.rs", "src/*"));
        assert!(!within("src/**", "src/*"));
        assert!(!within("src/**", "src/db/**"));
        assert!(!within("docs/a", "src/**"));
    }
}
