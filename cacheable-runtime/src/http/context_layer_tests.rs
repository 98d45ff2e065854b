//! Unit tests of `http::context_layer`.

use super::*;

fn parts(peer: &str, xff: &[&str]) -> http::request::Parts {
    let mut b = Request::builder();
    for x in xff {
        b = b.header("x-forwarded-for", *x);
    }
    let mut req = b.body(()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    req.into_parts().0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_custom_tenant_header_is_what_responses_vary_by() {
    let layer = ContextLayer::new().tenant_header("x-org");
    assert_eq!(
        layer.config.cache_headers.vary,
        vec![HeaderName::from_static("x-org")]
    );
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let layer = ContextLayer::new()
        .trusted_proxies([ip("10.0.0.1")])
        .trusted_proxy_range(ip("192.168.0.0"), 16);
    let c = &layer.config;
    // Untrusted peer: the header is ignored.
    assert_eq!(
        c.client_ip(&parts("203.0.113.9:1", &["1.1.1.1"])),
        Some(ip("203.0.113.9"))
    );
    // Trusted peer: right-most untrusted hop, spoofed prefix ignored.
    assert_eq!(
        c.client_ip(&parts(
            "10.0.0.1:1",
            &["6.6.6.6, 198.51.100.7", "192.168.4.4"]
        )),
        Some(ip("198.51.100.7"))
    );
    // Only proxies: the left-most one.
    assert_eq!(
        c.client_ip(&parts("10.0.0.1:1", &["192.168.1.1"])),
        Some(ip("192.168.1.1"))
    );
    // Garbage stops the walk at the last good hop.
    assert_eq!(
        c.client_ip(&parts("10.0.0.1:1", &["1.2.3.4, junk, 192.168.9.9"])),
        Some(ip("192.168.9.9"))
    );
    // Ports and brackets.
    assert_eq!(
        c.client_ip(&parts("[::ffff:10.0.0.1]:1", &["[2001:db8::5]:443"])),
        Some(ip("2001:db8::5"))
    );
}

fn with_tenant(values: &[&[u8]]) -> http::request::Parts {
    let mut req = Request::builder().body(()).unwrap();
    for v in values {
        req.headers_mut().append(
            "x-tenant-id",
            http::HeaderValue::from_bytes(v).expect("header value"),
        );
    }
    req.into_parts().0
}

fn tenant_of(layer: &ContextLayer, values: &[&[u8]]) -> Result<Option<String>, InvalidTenant> {
    layer.config.tenant(&with_tenant(values))
}

#[test]
fn tenant_ids_from_requests_are_checked() {
    let layer = ContextLayer::new();
    assert_eq!(tenant_of(&layer, &[b"acme"]), Ok(Some("acme".into())));
    assert_eq!(tenant_of(&layer, &[b" acme "]), Ok(Some("acme".into())));
    assert_eq!(tenant_of(&layer, &[]), Ok(None));
    assert_eq!(tenant_of(&layer, &[b"  "]), Ok(None));
    // UTF-8 is a tenant, not "no tenant" (`to_str` refuses it).
    assert_eq!(
        tenant_of(&layer, &["café".as_bytes()]),
        Ok(Some("café".into()))
    );
    assert_eq!(
        tenant_of(&layer, &[b"caf\xe9"]),
        Err(InvalidTenant::NotUtf8)
    );
    assert_eq!(
        tenant_of(&layer, &[b"a\tb"]),
        Err(InvalidTenant::ControlCharacter)
    );
    assert_eq!(
        tenant_of(&layer, &["a\u{85}b".as_bytes()]),
        Err(InvalidTenant::ControlCharacter)
    );
    assert_eq!(
        tenant_of(&layer, &[b"a", b"b"]),
        Err(InvalidTenant::Ambiguous)
    );
    let long = vec![b'x'; MAX_TENANT_LEN + 1];
    assert!(matches!(
        tenant_of(&layer, &[&long]),
        Err(InvalidTenant::TooLong { .. })
    ));
    assert_eq!(
        tenant_of(&layer, &[&long[..MAX_TENANT_LEN]]).map(|t| t.map(|t| t.len())),
        Ok(Some(MAX_TENANT_LEN))
    );
    let short = ContextLayer::new().max_tenant_len(4);
    assert!(tenant_of(&short, &[b"acme"]).is_ok());
    assert!(tenant_of(&short, &[b"acmes"]).is_err());
    // The closure's answer is checked too.
    let from_fn = ContextLayer::new().tenant_from(|_| Some("x".repeat(300)));
    assert!(tenant_of(&from_fn, &[]).is_err());
}

#[test]
fn an_invalid_tenant_header_name_does_not_panic_and_fails_closed() {
    assert!(ContextLayer::new().try_tenant_header("bad name").is_err());
    let layer = ContextLayer::new().tenant_header("bad name\n");
    let notes = Arc::new(ResponseNotes::default());
    assert!(matches!(
        layer.config.context(&with_tenant(&[b"acme"]), notes),
        Err(Refusal::Misconfigured)
    ));
    // A valid name afterwards repairs it.
    let layer = layer.tenant_header("x-org");
    assert!(layer.config.misconfigured.is_none());
}

#[test]
fn networks_match_by_prefix() {
    let n = Net {
        addr: ip("10.1.0.0"),
        prefix: 16,
    };
    assert!(n.contains(ip("10.1.200.3")));
    assert!(!n.contains(ip("10.2.0.1")));
    let all = Net {
        addr: ip("::"),
        prefix: 0,
    };
    assert!(all.contains(ip("2001:db8::1")));
    assert!(!all.contains(ip("1.2.3.4")));
}
