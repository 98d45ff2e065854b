//! Unit tests of `monitor::alerts` (the alert state machine).

use super::*;

fn tick_ratio(r: f64) -> Tick {
    Tick {
        hit_ratio: Some(r),
        ..Tick::default()
    }
}

#[test]
fn fires_once_and_resolves_once_and_ignores_flapping() {
    let alerts = Alerts::new(
        vec![Alert::hit_ratio_below(0.5).for_(Duration::from_secs(3))],
        Vec::new(),
        Duration::from_secs(1),
    );
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut events = Vec::new();
    // Flapping every second: never fires.
    for s in 0..10 {
        let r = if s % 2 == 0 { 0.1 } else { 0.9 };
        events.extend(step(&alerts, &tick_ratio(r), at(s)));
    }
    assert!(events.is_empty(), "{events:?}");
    // Low for 3 s: fires once, at the third second.
    for s in 10..20 {
        events.extend(step(&alerts, &tick_ratio(0.1), at(s)));
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlertState::Firing);
    assert!(alerts.firing().len() == 1);
    // A tick without data changes nothing.
    assert!(step(&alerts, &Tick::default(), at(20)).is_empty());
    // Flapping while firing: stays firing.
    for s in 21..30 {
        let r = if s % 2 == 0 { 0.1 } else { 0.9 };
        events.extend(step(&alerts, &tick_ratio(r), at(s)));
    }
    assert_eq!(events.len(), 1);
    // High for 3 s: resolves once.
    for s in 30..40 {
        events.extend(step(&alerts, &tick_ratio(0.9), at(s)));
    }
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].state, AlertState::Resolved);
    assert!(alerts.firing().is_empty());
}

#[test]
fn names_and_narrowing() {
    let a = Alert::p99_above(Duration::from_millis(5)).route("GET", "/x");
    assert_eq!(a.name(), "p99_above(5ms, GET /x)");
    let tick = Tick {
        p99: HashMap::from([("GET /x".to_owned(), 0.010), ("f:g".to_owned(), 1.0)]),
        ..Tick::default()
    };
    assert_eq!(condition(&a, &tick), Some((true, 0.010)));
    let f = Alert::p99_above(Duration::from_secs(2)).function("g");
    assert_eq!(condition(&f, &tick), Some((false, 1.0)));
    assert_eq!(
        Alert::redis_unreachable().function("g").name(),
        "redis_unreachable"
    );
}
