//! The `Host` check against DNS rebinding: a request is answered only if it names the gateway itself.
//!
//! A web page elsewhere can point its own domain at 127.0.0.1 and then read the answers as same-origin
//! (DNS rebinding). Its requests still carry its domain in `Host`, so only these are accepted, with the
//! gateway's own port: `127.0.0.1`, `localhost`, `[::1]` (the plain origin) and `LABEL.localhost` (a
//! share's origin). The port may be left out only when it is 80, as browsers do.

/// Which origin a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `127.0.0.1`, `localhost` or `[::1]`: the gateway's own pages, `/blob/…` and `/share/…`.
    Plain,
    /// `LABEL.localhost`: a share as its own origin; the label in lowercase.
    Site(String),
}

/// The origin `host` (a `Host` header's value or a URI's authority) names, if it is this gateway on
/// `port`.
pub(crate) fn check(host: &str, port: u16) -> Option<Origin> {
    let host = host.to_ascii_lowercase();
    let (name, given_port) = split_port(&host)?;
    match given_port {
        Some(p) if p == port => {}
        None if port == 80 => {}
        _ => return None,
    }
    match name {
        "127.0.0.1" | "localhost" | "[::1]" => Some(Origin::Plain),
        _ => {
            let label = name.strip_suffix(".localhost")?;
            is_label(label).then(|| Origin::Site(label.to_owned()))
        }
    }
}

/// Splits `name[:port]`; `None` if the port is there but not a number.
fn split_port(host: &str) -> Option<(&str, Option<u16>)> {
    let split_at = if host.starts_with('[') {
        host.find(']')? + 1
    } else {
        host.find(':').unwrap_or(host.len())
    };
    let (name, rest) = host.split_at(split_at);
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Some((name, None)),
        None => None,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some((name, Some(digits.parse().ok()?)))
        }
        Some(_) => None,
    }
}

/// Whether `label` can be a share's origin label: a DNS label of lowercase letters, digits and `-`.
pub(crate) fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "rbqrhetzscjzw6e6b5uqmpvmmxcvkiyzhoo7z5ghqnx4wm3oi5ea";

    #[test]
    fn accepts_only_itself() {
        assert_eq!(check("127.0.0.1:8080", 8080), Some(Origin::Plain));
        assert_eq!(check("localhost:8080", 8080), Some(Origin::Plain));
        assert_eq!(check("LocalHost:8080", 8080), Some(Origin::Plain));
        assert_eq!(check("[::1]:8080", 8080), Some(Origin::Plain));
        assert_eq!(
            check(&format!("{KEY}.localhost:8080"), 8080),
            Some(Origin::Site(KEY.into()))
        );
        assert_eq!(
            check(&format!("{}.LOCALHOST:8080", KEY.to_uppercase()), 8080),
            Some(Origin::Site(KEY.into()))
        );
        // Port 80 may be left out, as browsers do; other ports may not.
        assert_eq!(check("localhost", 80), Some(Origin::Plain));
        assert_eq!(check("localhost", 8080), None);

        for refused in [
            "evil.example:8080",
            "127.0.0.2:8080",
            "localhost:8081",
            "localhost:",
            "localhost:80a",
            "localhost.:8080",
            "a.b.localhost:8080",
            ".localhost:8080",
            "-a.localhost:8080",
            "a_b.localhost:8080",
            "localhost.evil.example:8080",
            "[::2]:8080",
            "[::1]8080",
            "127.0.0.1:99999",
            "",
        ] {
            assert_eq!(check(refused, 8080), None, "{refused}");
        }
        let long = "a".repeat(64);
        assert_eq!(check(&format!("{long}.localhost:8080"), 8080), None);
    }
}
