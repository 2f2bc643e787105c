//! `Range` (one range of bytes, RFC 9110 §14) and the ETag conditions (`If-None-Match`, `If-Range`).

use std::ops::Range;

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// The whole representation: no `Range`, one we ignore (several ranges, another unit, bad syntax).
    Full,
    /// One satisfiable range: 206.
    Partial(Range<u64>),
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header's value for a representation of `size` bytes.
///
/// Only a single `bytes=` range is served; a request for several is answered with the whole
/// representation, which RFC 9110 allows (a server may ignore `Range`). So is a malformed header.
pub(crate) fn parse_range(value: &str, size: u64) -> Ranged {
    let Some(spec) = strip_prefix_ignore_case(value.trim(), "bytes=") else {
        return Ranged::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        let Some(n) = parse_digits(last) else {
            return Ranged::Full;
        };
        if n == 0 || size == 0 {
            return Ranged::Unsatisfiable;
        }
        return Ranged::Partial(size.saturating_sub(n)..size);
    }
    let Some(start) = parse_digits(first) else {
        return Ranged::Full;
    };
    let end = if last.is_empty() {
        size
    } else {
        match parse_digits(last) {
            Some(last) if last >= start => last.saturating_add(1).min(size),
            _ => return Ranged::Full,
        }
    };
    if start >= size {
        return Ranged::Unsatisfiable;
    }
    Ranged::Partial(start..end)
}

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits too many for u64 are beyond any size: saturate rather than refuse.
    Some(text.parse().unwrap_or(u64::MAX))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The quoted form of an entity tag, as sent in `ETag`.
pub(crate) fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Whether `If-None-Match: value` matches the entity tag `etag` (unquoted): weak comparison, so a
/// `W/` tag matches too, and `*` matches anything.
pub(crate) fn none_match(value: &str, etag: &str) -> bool {
    let value = value.trim();
    if value == "*" {
        return true;
    }
    tags(value).any(|(_, tag)| tag == etag)
}

/// Whether `If-Range: value` lets the range through: only a strong tag equal to ours does (a date,
/// which we never send as `Last-Modified`, or a weak tag does not).
pub(crate) fn if_range_matches(value: &str, etag: &str) -> bool {
    let value = value.trim();
    value.len() >= 2
        && value.starts_with('"')
        && value.ends_with('"')
        && &value[1..value.len() - 1] == etag
}

/// The tags of a comma-separated list: (weak, tag without quotes). Malformed items are skipped.
fn tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    list.split(',').filter_map(|item| {
        let item = item.trim();
        let (weak, quoted) = match item.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let tag = quoted.strip_prefix('"')?.strip_suffix('"')?;
        Some((weak, tag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Ranged::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial(0..100));
        assert_eq!(parse_range("bytes=100-", 1000), Partial(100..1000));
        assert_eq!(parse_range("bytes=-100", 1000), Partial(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Partial(0..1000));
        assert_eq!(parse_range("bytes=990-5000", 1000), Partial(990..1000));
        assert_eq!(
            parse_range("Bytes = 5-5 ", 1000),
            Full,
            "spaces around = are not the syntax"
        );
        assert_eq!(parse_range("BYTES=5-5", 1000), Partial(5..6));
        assert_eq!(parse_range("bytes=999-999", 1000), Partial(999..1000));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 1000),
            Partial(0..1000)
        );

        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);

        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("bytes=a-b", 1000), Full);
        assert_eq!(parse_range("bytes=-", 1000), Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("", 1000), Full);
    }

    #[test]
    fn etags() {
        assert!(none_match("\"abc\"", "abc"));
        assert!(none_match("W/\"abc\"", "abc"));
        assert!(none_match("\"x\", \"abc\"", "abc"));
        assert!(none_match("*", "abc"));
        assert!(!none_match("\"abcd\"", "abc"));
        assert!(!none_match("abc", "abc"));
        assert!(!none_match("", "abc"));

        assert!(if_range_matches("\"abc\"", "abc"));
        assert!(!if_range_matches("W/\"abc\"", "abc"));
        assert!(!if_range_matches("Tue, 15 Nov 1994 08:12:31 GMT", "abc"));
        assert_eq!(quote("abc"), "\"abc\"");
    }
}
