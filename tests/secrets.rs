//! Secrets never reach `Debug`, errors or logs: a Redis password, whatever
//! characters it holds, is masked wherever a URL is printed, and an
//! unparsable URL is never printed at all.

use cacheable::{Cache, CacheError};
use proptest::prelude::*;

/// Characters a password may hold, the URL delimiters among them.
const CHARS: &[char] = &[
    'a', 'Z', '7', '/', '@', ':', '#', '?', '%', '&', '=', '+', ' ', '!', '$', '[', ']', 'é',
];

fn password() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(CHARS), 0..12)
        // A marker no other part of the URL or message contains.
        .prop_map(|cs| format!("Qx{}Jw", cs.into_iter().collect::<String>()))
}

/// Percent-encodes everything but unreserved characters (how a careful user
/// writes a password into a URL).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every form of `pw` that must not be printed: raw, escaped, and the
/// marker-free middle (a fragment of it is a leak too).
fn leaks(text: &str, pw: &str) -> bool {
    let inner = &pw[2..pw.len() - 2];
    text.contains(pw)
        || text.contains(&escape(pw))
        || text.contains("Qx")
        || text.contains("Jw")
        || (inner.len() >= 3 && text.contains(inner))
}

fn printed(builder: &cacheable::CacheBuilder) -> String {
    let mut out = format!("{builder:?}");
    match builder.clone().build_blocking_for_tests() {
        Ok(cache) => out.push_str(&format!("{cache:?}")),
        Err(e) => out.push_str(&format!("{e} {e:?}")),
    }
    out
}

trait BuildBlocking {
    fn build_blocking_for_tests(self) -> Result<Cache, CacheError>;
}

impl BuildBlocking for cacheable::CacheBuilder {
    fn build_blocking_for_tests(self) -> Result<Cache, CacheError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(self.build())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Raw and escaped, in a single URL and in a cluster's list, with and
    /// without a user: `Debug` of the builder and the cache and every build
    /// error hide the password.
    #[test]
    fn redis_passwords_are_never_printed(pw in password()) {
        let escaped = escape(&pw);
        for url in [
            format!("redis://user:{pw}@127.0.0.1:1/0"),
            format!("redis://user:{escaped}@127.0.0.1:1/0"),
            format!("redis://:{pw}@127.0.0.1:1"),
            format!("rediss://:{escaped}@127.0.0.1:1/"),
            format!("redis://{escaped}@127.0.0.1:1/"),
            format!("redis+unix:///tmp/x.sock?db=0&pass={escaped}"),
            format!("redis:/{pw}"),
            pw.clone(),
        ] {
            let single = printed(&Cache::builder().redis_url(url.clone()));
            prop_assert!(!leaks(&single, &pw), "{url} printed as {single}");
            let cluster = printed(&Cache::builder().redis_cluster([url.clone()]));
            prop_assert!(!leaks(&cluster, &pw), "{url} printed as {cluster}");
        }
    }
}

#[test]
fn an_unparsable_url_is_never_printed_raw() {
    let builder = Cache::builder().redis_url("redis://u:hunter2/x@h:1/0");
    let debug = format!("{builder:?}");
    assert!(debug.contains("<unparsable url>"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let err = builder
        .build_blocking_for_tests()
        .expect_err("a bad url is a configuration error");
    assert!(matches!(err, CacheError::Config(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
}
