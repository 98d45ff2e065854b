//! Unit tests of `key` (key building and escaping).

use super::*;
use std::collections::{BTreeMap, HashMap};

fn h<T: Serialize + ?Sized>(args: &[&T]) -> String {
    let mut k = KeyHasher::new();
    for a in args {
        k.arg(*a).unwrap();
    }
    k.finish_hex()
}

#[test]
fn tenant_escape_is_injective_and_safe() {
    let ids = [
        "a:b", "a%3Ab", "*", "{x}", "", "ü", "a", "A", "a.b", "a-b", "a_b",
    ];
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        let ns = namespace("p", Some(&TenantId::from(id)));
        let inner = &ns["p:{t:".len()..ns.len() - 1];
        assert!(!inner.contains([':', '{', '}', '*']), "{ns}");
        assert!(seen.insert(ns.clone()), "collision on {ns}");
    }
    assert_eq!(namespace("p", Some(&TenantId::from("a:b"))), "p:{t:a%3Ab}");
    assert_eq!(
        namespace("p", Some(&TenantId::from("a%3Ab"))),
        "p:{t:a%253Ab}"
    );
    assert_eq!(namespace("p", None), "p:{g}");
    let big = "x".repeat(10 * 1024);
    assert_eq!(
        namespace("p", Some(&TenantId::from(big.as_str()))).len(),
        10 * 1024 + 6
    );
}

#[test]
fn hash_part_is_fixed_width_hex() {
    assert_eq!(hash_part(0), format!("h{}", "0".repeat(32)));
    assert_eq!(hash_part(0xAB), format!("h{:032x}", 0xABu128));
    assert_eq!(hash_part(u128::MAX), format!("h{}", "f".repeat(32)));
}

#[test]
fn golden_layout() {
    let ns = namespace("app", Some(&TenantId::from("acme")));
    assert_eq!(ns, "app:{t:acme}");
    assert_eq!(
        entry_key(&ns, "users::get", 2, "00ff"),
        "app:{t:acme}:e:users%3A%3Aget:2:00ff"
    );
    assert_eq!(user_entry_key(&ns, "a b"), "app:{t:acme}:k:a%20b");
    assert_eq!(generation_key(&ns), "app:{t:acme}:v:g");
    assert_eq!(tag_key(&ns, "user:1"), "app:{t:acme}:v:t:user%3A1");
    assert_eq!(user_key_version(&ns, "a:b"), "app:{t:acme}:v:k:a%3Ab");
    assert_eq!(all_tenants_namespace("app"), "app:{a}");
    assert_eq!(epoch_key(&ns), "app:{t:acme}:v:e");
    assert_eq!(epoch_key(&all_tenants_namespace("app")), "app:{a}:v:e");
}

#[test]
fn golden_hashes_are_stable() {
    // Pinned: a change here changes every key in production. Bump SCHEMA.
    assert_eq!(h::<u64>(&[&42]), GOLDEN_U64_42);
    assert_eq!(h::<str>(&["héllo"]), GOLDEN_STR);
    assert_ne!(h::<str>(&["ab", "c"]), h::<str>(&["a", "bc"]));
    assert_ne!(h::<u32>(&[&1]), h::<u64>(&[&1]));
    assert_ne!(h::<Option<u8>>(&[&None]), h::<Option<u8>>(&[&Some(0)]));
}

#[test]
fn golden_identities() {
    // Pinned beside the golden keys in `tests/identity.rs`.
    let hex = |id: Identity| {
        let mut s = String::new();
        id.push_hex(&mut s);
        s
    };
    assert_eq!(
        hex(IdentityBuilder::named("golden.named").finish()),
        "9a902e6744bdf3ac"
    );
    let named = IdentityBuilder::named("n");
    assert_ne!(
        named.clone().ty("a").finish(),
        named.clone().ty("b").finish()
    );
    assert_ne!(
        named.clone().konst(&2u64).finish(),
        named.clone().konst(&3u64).finish()
    );
    assert_ne!(
        named.clone().ty("ab").finish(),
        named.clone().ty("a").ty("b").finish()
    );
    assert_ne!(named.finish(), Identity::of_path("n"));
    assert_ne!(
        Identity::of_path("m::UserRepo::name::{{closure}}::{{closure}}"),
        Identity::of_path("m::OrgRepo::name::{{closure}}::{{closure}}")
    );
}

#[test]
fn rendered_templates_are_injective() {
    let render = |a: &str, b: &str| {
        let mut out = String::new();
        render_parts_into(
            &mut out,
            &[KeyPart::Value(&a), KeyPart::Text(":"), KeyPart::Value(&b)],
        );
        out
    };
    assert_eq!(render("x:y", "z"), "x%3Ay:%3A:z");
    assert_eq!(render("x", "y:z"), "x:%3A:y%3Az");
    let pairs = [
        ("x:y", "z"),
        ("x", "y:z"),
        ("x%3Ay", "z"),
        ("", ":"),
        (":", ""),
        ("", ""),
    ];
    let mut seen = std::collections::HashSet::new();
    for (a, b) in pairs {
        let r = render(a, b);
        assert!(!r.contains(['{', '}', '*', ' ']), "{r}");
        assert!(seen.insert(r.clone()), "collision on {r}");
    }
    // `{a:?}` parts are escaped the same way: `Debug` of a string
    // (quotes, escapes) is one part, never a separator.
    let debug = |a: &str, b: &str| {
        let mut out = String::new();
        render_parts_into(
            &mut out,
            &[KeyPart::Debug(&a), KeyPart::Text(":"), KeyPart::Value(&b)],
        );
        out
    };
    assert_eq!(debug("x:y", "z"), "%22x%3Ay%22:%3A:z");
    for (a, b) in pairs {
        let r = debug(a, b);
        assert!(!r.contains(['{', '}', '*', ' ', '"']), "{r}");
        assert!(seen.insert(r.clone()), "collision on {r}");
    }
}

proptest::proptest! {
    /// Two different value pairs never render the same, whether each
    /// part is rendered with `Display` or `Debug` (`{a:?}`).
    #[test]
    fn rendering_is_injective(
        a in ".{0,6}", b in ".{0,6}", c in ".{0,6}", d in ".{0,6}", debug: bool,
    ) {
        let render = |x: &str, y: &str| {
            let mut out = String::new();
            let first = if debug { KeyPart::Debug(&x) } else { KeyPart::Value(&x) };
            render_parts_into(&mut out, &[first, KeyPart::Text(":"), KeyPart::Value(&y)]);
            out
        };
        if (a.as_str(), b.as_str()) != (c.as_str(), d.as_str()) {
            proptest::prop_assert_ne!(render(&a, &b), render(&c, &d));
        }
    }
}

const GOLDEN_U64_42: &str = "deac15c6de0a5c284021cc0f5c097969";
const GOLDEN_STR: &str = "42ada07cec42d7662fb5f20bc1da992e";

#[test]
fn maps_hash_independently_of_order() {
    let a: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    let b: BTreeMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    let mut c: HashMap<String, u32> = HashMap::with_capacity(1000);
    for i in (0..50).rev() {
        c.insert(format!("k{i}"), i);
    }
    assert_eq!(h(&[&a]), h(&[&b]));
    assert_eq!(h(&[&a]), h(&[&c]));
    let mut d = b.clone();
    d.insert("k0".into(), 99);
    assert_ne!(h(&[&b]), h(&[&d]));
}

/// The hit path's in-place key builders give the same keys as the plain ones.
#[test]
fn in_place_builders_agree_with_the_plain_ones() {
    let t = TenantId::from("a:b ü");
    let ns = namespace("p", Some(&t));
    for h in [0u128, 0xAB, u128::MAX] {
        assert_eq!(
            entry_key_hashed(&ns, "m::f", 3, h),
            entry_key(&ns, "m::f", 3, &hash_part(h))
        );
        for tenant in [Some(&t), None] {
            let ns = namespace("p", tenant);
            let (k, ns_len) = site_entry_key("p", tenant, "m::f", 3, h, None);
            assert_eq!(k, entry_key(&ns, "m::f", 3, &hash_part(h)));
            assert_eq!(&k[..ns_len], ns);
            let (k, ns_len) = site_entry_key("p", tenant, "m::f", 3, h, Some("0123:x%3Ay"));
            assert_eq!(k, entry_key(&ns, "m::f", 3, "t0123:x%3Ay"));
            assert_eq!(&k[..ns_len], ns);
        }
    }
    let all = all_tenants_namespace("p");
    for tag in ["user:42", "", "a%b{c}*", "ü", "plain"] {
        let in_ns = tag_key(&ns, tag);
        assert_eq!(all_tenants_tag_key("p", &ns, &in_ns), tag_key(&all, tag));
    }
    assert_eq!(all_tenants_epoch_key("p"), epoch_key(&all));
    let mut out = String::new();
    escape_into(&mut out, "a:b\u{7f}ü-_.Z9");
    assert_eq!(out, "a%3Ab%7F%C3%BC-_.Z9");
}

/// The run-copying escape against the byte-by-byte definition, around
/// multi-byte chars (runs must never split one).
#[test]
fn escape_matches_its_byte_by_byte_definition() {
    fn reference(raw: &str) -> String {
        raw.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    for raw in [
        "",
        "ü",
        "üü",
        "aü",
        "üa",
        "a:ü:b",
        "€x€",
        "::",
        "x",
        "😀a😀",
        "a b",
    ] {
        let mut out = String::new();
        escape_into(&mut out, raw);
        assert_eq!(out, reference(raw), "{raw:?}");
    }
}
