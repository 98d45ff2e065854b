//! Unit tests of `http::conditional`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

#[test]
fn dates_in_all_three_forms() {
    let t = 784_111_777;
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
    assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(t));
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49 GMT"), None);
    assert_eq!(parse_http_date("yesterday"), None);
    assert_eq!(parse_http_date(""), None);
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(t)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(parse_http_date(&http_date(now)), Some(secs));
}

#[test]
fn entity_tag_lists() {
    let tags = parse_entity_tags(br#""a", W/"b,c" ,"""#).unwrap();
    assert_eq!(
        tags,
        [
            EntityTag {
                weak: false,
                opaque: br#""a""#
            },
            EntityTag {
                weak: true,
                opaque: br#""b,c""#
            },
            EntityTag {
                weak: false,
                opaque: br#""""#
            },
        ]
    );
    assert!(parse_entity_tags(b"a").is_none());
    assert!(parse_entity_tags(br#""a" "b""#).is_none());
    assert!(parse_entity_tags(br#""unterminated"#).is_none());
}

#[test]
fn weak_comparison() {
    assert!(if_none_match_matches(r#"W/"x""#, Some(br#""x""#)));
    assert!(if_none_match_matches(r#""y", "x""#, Some(br#"W/"x""#)));
    assert!(!if_none_match_matches(r#""y""#, Some(br#""x""#)));
    assert!(if_none_match_matches("*", None));
    assert!(!if_none_match_matches(r#""x""#, None));
}
