//! Unit tests of `stats` (the counters behind `Cache::stats`).

use super::*;

#[test]
fn a_million_function_names_keep_at_most_max_functions() {
    // A million distinct static names, from one leaked buffer.
    let all: &'static str = Box::leak(
        (0..1_000_000u32)
            .map(|i| format!("f{i:07}"))
            .collect::<String>()
            .into_boxed_str(),
    );
    let r = Registry::default();
    for i in 0..1_000_000 {
        let name = &all[i * 8..i * 8 + 8];
        let f = r.function(name);
        r.miss(&f, name);
    }
    let stats = r.snapshot();
    assert_eq!(stats.functions().count(), MAX_FUNCTIONS);
    assert_eq!(
        stats.misses, 1_000_000,
        "every call still counts in the totals"
    );
    assert_eq!(stats.function("f0000000").map(|f| f.misses), Some(1));
    assert!(stats.function("f0999999").is_none());
    // A name that has its counters keeps them.
    let f = r.function("f0000000");
    r.miss(&f, "f0000000");
    assert_eq!(r.snapshot().function("f0000000").map(|f| f.misses), Some(2));
}

#[test]
fn stats_with_routes_serialize_to_json() {
    // Routes are keyed by (route, method) in memory; JSON objects cannot
    // have pair keys, so they serialize as a list. Failed with
    // "key must be a string" (a 500 from `Json(cache.stats())`) before.
    let registry = Registry::default();
    registry.routes.record(
        "GET",
        "/users/{id}",
        200,
        crate::monitor::routes::Outcome::Hit,
        Duration::from_millis(3),
        10,
    );
    let json = serde_json::to_value(registry.snapshot()).expect("Stats serializes");
    let routes = json["routes"].as_array().expect("routes is a list");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["route"], "/users/{id}");
    assert_eq!(routes[0]["method"], "GET");
    assert_eq!(routes[0]["status_2xx"], 1);
}
