//! Keeping credentials out of egress records and logs.
//!
//! Many APIs take a key in the query string (`?api_key=…`, `?access_token=…`). The URL
//! of every outbound request goes into the audit ledger (its `policy_decision` subjects)
//! and the logs, which are read by people who must not learn the key: the values of
//! secret-looking query keys are replaced before the URL is stored anywhere.

/// What replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// Parts of a query key that mark its value as a credential (compared lowercase, with
/// `-`, `_` and `.` removed, so `API-Key`, `api_key` and `apiKey` all match `apikey`).
const SECRET_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "signature",
    "credential",
    "session",
    "cookie",
    "jwt",
    "bearer",
];

/// Keys that are credentials only when they are the whole key.
const SECRET_KEYS: &[&str] = &["sig", "code", "pass", "pin", "otp"];

/// Whether a query key looks like it carries a credential.
pub fn is_secret_key(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_PARTS.iter().any(|part| key.contains(part)) || SECRET_KEYS.contains(&key.as_str())
}

/// `url` with the values of secret-looking query keys replaced by `REDACTED`, and any
/// fragment dropped. Keys are judged after percent-decoding, so `%61pi_key` is caught.
pub fn redact_url(url: &str) -> String {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret_key(&percent_decode(key)) => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_redacted_and_others_kept() {
        for (url, expected) in [
            (
                "https://api.example.com:443/v1?q=cats&api_key=sk-123&page=2",
                "https://api.example.com:443/v1?q=cats&api_key=REDACTED&page=2",
            ),
            (
                "https://h:443/?access_token=abc&Authorization=Bearer+x&sig=zz",
                "https://h:443/?access_token=REDACTED&Authorization=REDACTED&sig=REDACTED",
            ),
            (
                "https://h:443/?%61pi%5Fkey=s3cret",
                "https://h:443/?%61pi%5Fkey=REDACTED",
            ),
            (
                "https://h:443/?apiKey=1&client-secret=2",
                "https://h:443/?apiKey=REDACTED&client-secret=REDACTED",
            ),
            ("https://h:443/p?q=1#token=x", "https://h:443/p?q=1"),
            ("https://h:443/p", "https://h:443/p"),
            ("https://h:443/p?flag&token=", "https://h:443/p?flag&token="),
            ("https://h:443/p?%=1&%zz=2", "https://h:443/p?%=1&%zz=2"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
        assert!(!is_secret_key("q"));
        assert!(!is_secret_key("page"));
        assert!(is_secret_key("X-Amz-Signature"));
    }
}
