//! Alerts: thresholds on the cache's own figures, each sustained over a
//! window, evaluated by one background task.
//!
//! # How an alert moves
//!
//! 1. The evaluator task exists only when at least one [`Alert`] is
//!    configured. It holds the cache weakly: it stops at its next tick once
//!    every `Cache` clone is dropped.
//! 2. Every tick (`CacheBuilder::alert_interval`, default 1 s) each alert's
//!    condition is measured **over that tick** (hit ratio, p99 and denial
//!    rate from the difference of two snapshots; reachability and memory as
//!    they are now). A tick without data (no reads, no samples) changes
//!    nothing.
//! 3. Hysteresis: an alert fires once its condition has held at every tick
//!    for its window (`for_`, default 1 min), and resolves once it has been
//!    false at every tick for the same window. A condition that flaps faster
//!    than the window never moves the alert: no storm.
//! 4. Each transition emits one `tracing` event (`warn` when firing, `info`
//!    when resolving) and one call of every `on_alert` callback (a panicking
//!    callback is caught and logged). [`Cache::alerts`](crate::Cache::alerts)
//!    lists the firing ones.
//!
//! The task itself is `cache::alerts`: it reads the cache's counters into
//! plain [`Figures`] and hands them to [`Alerts::evaluate`] here, so this
//! module (the state machine) knows nothing of `Cache`. Over 400 lines: the
//! public [`Alert`] and the state machine that matches on its private kinds
//! stay together; the unit tests are in `alerts_tests.rs`.
//!
//! The evaluator's own I/O per tick: one `PING` for `redis_unreachable`, one
//! `INFO memory` per server for `memory_above`; nothing for the others.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::monitor::sketch::quantile;

/// What an alert watches.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    HitRatioBelow(f64),
    P99Above(Duration, Target),
    RedisUnreachable,
    MemoryAbove(f64),
    DenialsAbove(f64),
}

/// Whose p99 a `p99_above` alert watches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The worst of every function's computations and every route.
    Any,
    Function(String),
    /// `"GET /route"`.
    Route(String),
}

/// A threshold on the cache's figures, sustained over a window; configure
/// with `CacheBuilder::alert`. See the `monitor::alerts` docs.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Alert {
    kind: Kind,
    window: Duration,
}

impl Alert {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            window: Duration::from_secs(60),
        }
    }

    /// The hit ratio of the reads in each tick is below `ratio` (0..=1).
    pub fn hit_ratio_below(ratio: f64) -> Self {
        Self::new(Kind::HitRatioBelow(ratio))
    }

    /// The p99 over each tick is above `limit`: of the computations of any
    /// function and the requests of any route (`MetricsLayer`), unless
    /// narrowed with [`function`](Self::function) or [`route`](Self::route).
    pub fn p99_above(limit: Duration) -> Self {
        Self::new(Kind::P99Above(limit, Target::Any))
    }

    /// Narrows a `p99_above` alert to one function's computations (by its
    /// name in `Stats::function`). No effect on other alerts.
    pub fn function(mut self, name: impl Into<String>) -> Self {
        if let Kind::P99Above(limit, _) = self.kind {
            self.kind = Kind::P99Above(limit, Target::Function(name.into()));
        }
        self
    }

    /// Narrows a `p99_above` alert to one method and matched route
    /// (`"GET"`, `"/users/{id}"`). No effect on other alerts.
    pub fn route(mut self, method: &str, route: &str) -> Self {
        if let Kind::P99Above(limit, _) = self.kind {
            self.kind = Kind::P99Above(limit, Target::Route(format!("{method} {route}")));
        }
        self
    }

    /// Redis does not answer a `PING` within `op_timeout`, or the circuit
    /// breaker is not closed.
    pub fn redis_unreachable() -> Self {
        Self::new(Kind::RedisUnreachable)
    }

    /// Redis `used_memory` is above `fraction` of `maxmemory` (summed over a
    /// cluster's masters; the memory store's capacity). No data when
    /// `maxmemory` is 0 (unlimited).
    pub fn memory_above(fraction: f64) -> Self {
        Self::new(Kind::MemoryAbove(fraction))
    }

    /// Rate-limit denials per second, over each tick, are above `per_second`.
    pub fn denials_above(per_second: f64) -> Self {
        Self::new(Kind::DenialsAbove(per_second))
    }

    /// How long the condition must hold to fire, and be false to resolve
    /// (default 60 s).
    pub fn for_(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// A short stable name: `hit_ratio_below(0.5)`, `p99_above(250ms, GET /x)`, ….
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::HitRatioBelow(r) => format!("hit_ratio_below({r})"),
            Kind::P99Above(d, Target::Any) => format!("p99_above({d:?})"),
            Kind::P99Above(d, Target::Function(f) | Target::Route(f)) => {
                format!("p99_above({d:?}, {f})")
            }
            Kind::RedisUnreachable => "redis_unreachable".to_owned(),
            Kind::MemoryAbove(f) => format!("memory_above({f})"),
            Kind::DenialsAbove(r) => format!("denials_above({r}/s)"),
        }
    }

    fn threshold(&self) -> f64 {
        match &self.kind {
            Kind::HitRatioBelow(x) | Kind::MemoryAbove(x) | Kind::DenialsAbove(x) => *x,
            Kind::P99Above(d, _) => d.as_secs_f64(),
            Kind::RedisUnreachable => 1.0,
        }
    }
}

/// Whether an alert fires or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum AlertState {
    /// The condition held for the window.
    Firing,
    /// The condition was false for the window.
    Resolved,
}

/// One transition of an alert (or, from [`Cache::alerts`](crate::Cache::alerts), one that fires now).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct AlertEvent {
    /// The alert's [`name`](Alert::name).
    pub alert: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// The measured value at the transition (a ratio, seconds, a fraction,
    /// denials per second; 1 or 0 for reachability).
    pub value: f64,
    /// The configured threshold, in the same unit.
    pub threshold: f64,
    /// When the transition happened.
    pub at: SystemTime,
}

/// A callback of `CacheBuilder::on_alert`.
pub type AlertCallback = Arc<dyn Fn(&AlertEvent) + Send + Sync>;

/// One alert's state.
#[derive(Debug)]
struct Slot {
    alert: Alert,
    firing: Option<AlertEvent>,
    /// Since when the condition has disagreed with the state.
    since: Option<Instant>,
}

/// The configured alerts of a cache, their state and callbacks.
pub(crate) struct Alerts {
    slots: Mutex<Vec<Slot>>,
    callbacks: Vec<AlertCallback>,
    interval: Duration,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("slots", &self.slots)
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}

impl Alerts {
    pub(crate) fn new(
        alerts: Vec<Alert>,
        callbacks: Vec<AlertCallback>,
        interval: Duration,
    ) -> Self {
        let slots = alerts
            .into_iter()
            .map(|alert| Slot {
                alert,
                firing: None,
                since: None,
            })
            .collect();
        Self {
            slots: Mutex::new(slots),
            callbacks,
            interval,
        }
    }

    /// How often the evaluator ticks (`CacheBuilder::alert_interval`).
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Which figures the configured alerts need.
    pub(crate) fn wants(&self) -> Wants {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let any = |f: fn(&Kind) -> bool| slots.iter().any(|s| f(&s.alert.kind));
        Wants {
            p99: any(|k| matches!(k, Kind::P99Above(..))),
            ping: any(|k| *k == Kind::RedisUnreachable),
            memory: any(|k| matches!(k, Kind::MemoryAbove(_))),
        }
    }

    /// Applies one tick's figures: moves every alert (see the module docs)
    /// and emits each transition.
    pub(crate) fn evaluate(&self, prev: &mut Previous, figures: Figures, now: Instant) {
        let tick = prev.tick(figures);
        for event in step(self, &tick, now) {
            emit(self, &event);
        }
    }

    /// The alerts firing now (`Cache::alerts`).
    pub(crate) fn firing(&self) -> Vec<AlertEvent> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|s| s.firing.clone())
            .collect()
    }
}

/// The previous tick's counters, for per-tick differences. Kept by the
/// evaluator task between ticks.
#[derive(Default)]
pub(crate) struct Previous {
    hits: u64,
    misses: u64,
    denied: u64,
    histograms: HashMap<String, Vec<u64>>,
    at: Option<Instant>,
}

/// Which figures this cache's alerts need measured (the others cost nothing).
pub(crate) struct Wants {
    /// Latency histograms, for `p99_above`.
    pub p99: bool,
    /// A `PING` and the breaker, for `redis_unreachable`.
    pub ping: bool,
    /// The memory fraction, for `memory_above`.
    pub memory: bool,
}

/// The figures a cache hands the evaluator once per tick: plain values,
/// taken by `cache::alerts` (this module knows nothing of `Cache`).
pub(crate) struct Figures {
    /// When the counters were read.
    pub at: Instant,
    /// Total hits and misses (`Stats`), and rate-limit denials, so far.
    pub hits: u64,
    pub misses: u64,
    pub denied: u64,
    /// Cumulative latency histogram counts of each function (`f:<name>`) and
    /// route (`GET /x`); empty unless [`Wants::p99`].
    pub histograms: Vec<(String, Vec<u64>)>,
    /// Redis does not answer or the breaker is not closed (`None`: not measured).
    pub unreachable: Option<bool>,
    /// `used / max` memory (`None`: not measured or unknown).
    pub memory: Option<f64>,
}

/// Figures measured once per tick, shared by all alerts.
#[derive(Default)]
struct Tick {
    hit_ratio: Option<f64>,
    /// p99 of each function (`f:<name>`) and route (`GET /x`) over the tick, in seconds.
    p99: HashMap<String, f64>,
    unreachable: Option<bool>,
    memory: Option<f64>,
    denials: Option<f64>,
}

impl Previous {
    /// This tick's figures from the counters so far minus the previous tick's.
    #[allow(clippy::cast_precision_loss)]
    fn tick(&mut self, f: Figures) -> Tick {
        let secs = self.at.map(|at| (f.at - at).as_secs_f64());
        self.at = Some(f.at);
        let mut tick = Tick::default();
        let (dh, dm) = (
            f.hits.saturating_sub(self.hits),
            f.misses.saturating_sub(self.misses),
        );
        (self.hits, self.misses) = (f.hits, f.misses);
        if dh + dm > 0 {
            tick.hit_ratio = Some(dh as f64 / (dh + dm) as f64);
        }
        if let Some(secs) = secs.filter(|s| *s > 0.0) {
            tick.denials = Some(f.denied.saturating_sub(self.denied) as f64 / secs);
        }
        self.denied = f.denied;
        for (name, counts) in f.histograms {
            let old = self.histograms.get(&name);
            let window: Vec<u64> = counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(old.and_then(|o| o.get(i)).copied().unwrap_or(0)))
                .collect();
            if let Some(p99) = quantile(&window, 0.99) {
                tick.p99.insert(name.clone(), p99 as f64 / 1e9);
            }
            self.histograms.insert(name, counts);
        }
        tick.unreachable = f.unreachable;
        tick.memory = f.memory;
        tick
    }
}

/// The condition of `alert` this tick (`None`: no data) and the value measured.
fn condition(alert: &Alert, tick: &Tick) -> Option<(bool, f64)> {
    match &alert.kind {
        Kind::HitRatioBelow(x) => tick.hit_ratio.map(|r| (r < *x, r)),
        Kind::P99Above(limit, target) => {
            let worst = match target {
                Target::Any => tick.p99.values().copied().reduce(f64::max),
                Target::Function(f) => tick.p99.get(&format!("f:{f}")).copied(),
                Target::Route(r) => tick.p99.get(r).copied(),
            }?;
            Some((worst > limit.as_secs_f64(), worst))
        }
        Kind::RedisUnreachable => tick.unreachable.map(|u| (u, f64::from(u8::from(u)))),
        Kind::MemoryAbove(x) => tick.memory.map(|m| (m > *x, m)),
        Kind::DenialsAbove(x) => tick.denials.map(|d| (d > *x, d)),
    }
}

/// Applies one tick to every alert; returns the transitions.
fn step(alerts: &Alerts, tick: &Tick, now: Instant) -> Vec<AlertEvent> {
    let mut events = Vec::new();
    let mut slots = alerts.slots.lock().unwrap_or_else(PoisonError::into_inner);
    for slot in slots.iter_mut() {
        let Some((cond, value)) = condition(&slot.alert, tick) else {
            continue;
        };
        if cond == slot.firing.is_some() {
            slot.since = None;
            continue;
        }
        let since = *slot.since.get_or_insert(now);
        if now.duration_since(since) < slot.alert.window {
            continue;
        }
        slot.since = None;
        let event = AlertEvent {
            alert: slot.alert.name(),
            state: if cond {
                AlertState::Firing
            } else {
                AlertState::Resolved
            },
            value,
            threshold: slot.alert.threshold(),
            at: SystemTime::now(),
        };
        slot.firing = cond.then(|| event.clone());
        events.push(event);
    }
    events
}

fn emit(alerts: &Alerts, event: &AlertEvent) {
    match event.state {
        AlertState::Firing => tracing::warn!(
            alert = %event.alert, value = event.value, threshold = event.threshold,
            "cache alert firing"
        ),
        AlertState::Resolved => tracing::info!(
            alert = %event.alert, value = event.value, threshold = event.threshold,
            "cache alert resolved"
        ),
    }
    for cb in &alerts.callbacks {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(event))).is_err() {
            tracing::error!(alert = %event.alert, "an on_alert callback panicked");
        }
    }
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
