//! Go's `path/filepath.Match` (Unix flavour), used to expand wildcard pool names.
//!
//! Pool names in `ipam.spidernet.io/ippool(s)`, namespace defaults and CNI-config defaults may be
//! patterns (`*`, `?`, `[a-c]`, `[^a]`, `\` escapes). Upstream matches them with `filepath.Match`; a
//! hand port keeps the exact semantics, including when a malformed pattern is reported (Go only
//! notices some syntax errors while matching, so `[` against an empty candidate list is not an
//! error). The port works on bytes and decodes UTF-8 only where Go decodes runes.

use thiserror::Error;

/// `filepath.ErrBadPattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

impl BadPattern {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "bad_pattern"
    }
}

const SEPARATOR: u8 = b'/';
const RUNE_ERROR: u32 = 0xFFFD;

/// `HasWildcardInStr`: `?`, `*`, or both `[` and `]`.
pub fn has_wildcard(text: &str) -> bool {
    text.contains('?') || text.contains('*') || (text.contains('[') && text.contains(']'))
}

/// `filepath.Match(pattern, name)`.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing `*` matches the rest of the name unless it has a separator.
            return Ok(!name.contains(&SEPARATOR));
        }
        let (remaining, matched) = match_chunk(chunk, name)?;
        if matched && (remaining.is_empty() || !pattern.is_empty()) {
            name = remaining;
            continue;
        }
        if star {
            let mut index = 0;
            while index < name.len() && name[index] != SEPARATOR {
                let (remaining, matched) = match_chunk(chunk, &name[index + 1..])?;
                if matched {
                    if pattern.is_empty() && !remaining.is_empty() {
                        index += 1;
                        continue;
                    }
                    name = remaining;
                    continue 'pattern;
                }
                index += 1;
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut index = 0;
    while index < pattern.len() {
        match pattern[index] {
            b'\\' if index + 1 < pattern.len() => index += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => return (star, &pattern[..index], &pattern[index..]),
            _ => {}
        }
        index += 1;
    }
    (star, pattern, &[])
}

/// `utf8.DecodeRuneInString`: (rune, width); invalid input yields (RuneError, 1), empty (RuneError, 0).
fn decode_rune(bytes: &[u8]) -> (u32, usize) {
    if bytes.is_empty() {
        return (RUNE_ERROR, 0);
    }
    let width = match bytes[0] {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    if bytes.len() < width {
        return (RUNE_ERROR, 1);
    }
    match std::str::from_utf8(&bytes[..width]) {
        Ok(text) => match text.chars().next() {
            Some(character) => (u32::from(character), width),
            None => (RUNE_ERROR, 1),
        },
        Err(_) => (RUNE_ERROR, 1),
    }
}

fn match_chunk<'a>(mut chunk: &[u8], mut name: &'a [u8]) -> Result<(&'a [u8], bool), BadPattern> {
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        failed = failed || name.is_empty();
        match first {
            b'[' => {
                let mut rune = 0u32;
                if !failed {
                    let (decoded, width) = decode_rune(name);
                    rune = decoded;
                    name = &name[width..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if let [b'^', rest @ ..] = chunk {
                    negated = true;
                    chunk = rest;
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if let [b']', rest @ ..] = chunk
                        && ranges > 0
                    {
                        chunk = rest;
                        break;
                    }
                    let (low, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut high = low;
                    if let [b'-', rest @ ..] = chunk {
                        let (value, rest) = get_escaped(rest)?;
                        high = value;
                        chunk = rest;
                    }
                    matched = matched || (low <= rune && rune <= high);
                    ranges += 1;
                }
                failed = failed || matched == negated;
            }
            b'?' => {
                if !failed {
                    failed = name[0] == SEPARATOR;
                    let (_, width) = decode_rune(name);
                    name = &name[width..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let mut literal_chunk = chunk;
                if first == b'\\' {
                    literal_chunk = &chunk[1..];
                    if literal_chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    failed = literal_chunk[0] != name[0];
                    name = &name[1..];
                }
                chunk = &literal_chunk[1..];
            }
        }
    }
    if failed {
        return Ok((&[], false));
    }
    Ok((name, true))
}

fn get_escaped(chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (rune, width) = decode_rune(chunk);
    let rest = &chunk[width..];
    if (rune == RUNE_ERROR && width == 1) || rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((rune, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    // G74
    #[test]
    fn wildcard_detection_matches_upstream() {
        assert!(!has_wildcard("pool"));
        assert!(has_wildcard("pool?"));
        assert!(has_wildcard("pool*"));
        assert!(has_wildcard("pool[abc]"));
        assert!(!has_wildcard("pool[abc"));
    }

    /// Expected values produced by Go 1.26 `filepath.Match` on Linux.
    #[test]
    fn glob_matches_go_filepath_match() {
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[x-]", "-", Err(BadPattern)),
            ("[x-]", "z", Err(BadPattern)),
            ("[-x]", "x", Err(BadPattern)),
            ("[-x]", "-", Err(BadPattern)),
            ("[-x]", "a", Err(BadPattern)),
            ("\\", "a", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("[^bc", "a", Err(BadPattern)),
            ("a[", "a", Err(BadPattern)),
            ("a[", "ab", Err(BadPattern)),
            ("a[", "x", Err(BadPattern)),
            ("a/b[", "x", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
            ("pool-*", "pool-v4", Ok(true)),
            ("pool-?", "pool-a", Ok(true)),
            ("pool-[a-c]", "pool-b", Ok(true)),
            ("pool-[a-c]", "pool-d", Ok(false)),
            ("rdmarail1-*", "rdmarail1-v4-a", Ok(true)),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                glob_match(pattern, name),
                *expected,
                "pattern {pattern:?} name {name:?}"
            );
        }
    }

    #[test]
    fn glob_never_panics_on_odd_bytes() {
        for pattern in [
            "[", "[\\", "[a-", "\\", "*[", "?", "[^]", "[é-", "é*", "*é?",
        ] {
            for name in ["", "é", "a", "/", "ab/"] {
                let _ = glob_match(pattern, name);
            }
        }
    }
}
