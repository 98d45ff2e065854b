//! The `tenant-api` binary: the service of `lib.rs` with its operator
//! endpoints, a Prometheus recorder for the `metrics` facade (rendered at
//! `/metrics`, no HTTP server of its own) and a stderr logger for warnings
//! (sqlx's slow statements, the cache's alerts and errors).
//!
//! Run: `cargo run -p tenant-api`; see the library's docs for the endpoints
//! and settings (`DATABASE_URL`, `REDIS_URL`, `PORT`, `CACHE_ADMIN_TOKEN`).

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tenant_api::{AdminToken, AppState, cache_from_env, connect_database, default_database_url};
use tokio::net::TcpListener;

/// Prints warnings and errors of the `log` facade (and of `tracing`, which
/// forwards to it when no subscriber is set) to stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("{} {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Histogram buckets (seconds) for request, hit and compute times: from
/// 50 µs to 10 s, so Grafana's `histogram_quantile` works on them.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Installs the Prometheus recorder as the `metrics` facade's global
/// recorder; histograms render as buckets. Its upkeep (draining histogram
/// samples) runs every 5 s on a task.
fn prometheus() -> Result<PrometheusHandle, Box<dyn Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    log::set_logger(&LOGGER).map_err(|e| e.to_string())?;
    log::set_max_level(log::LevelFilter::Warn);
    let metrics = prometheus()?;
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| default_database_url());
    let (db, database) = connect_database(&database_url).await?;
    let (cache, cache_desc) = cache_from_env().await?;
    if database == "postgres" {
        // Writes made outside the service invalidate too: the trigger
        // notifies, the listener turns notifications into invalidations.
        sqlx::raw_sql(include_str!("../sql/notify.sql"))
            .execute(&db)
            .await?;
        cacheable::events::postgres::listen(&cache, &database_url, "cache_invalidation");
    }
    let admin = AdminToken::from_env();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 3000,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let shown_db = database_url.split('@').next_back().unwrap_or(&database_url);
    println!("database: {database} ({shown_db})");
    println!("cache:    {cache_desc}");
    if database == "postgres" {
        println!("events:   invalidation on Postgres NOTIFY cache_invalidation (sql/notify.sql)");
    }
    println!("listening on http://{addr}");
    println!("dashboard: http://{addr}/_cache?token={}", admin.as_str());
    let ops = Router::new().route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    );
    let state = AppState {
        db,
        cache,
        database,
    };
    let service = tenant_api::service(state, admin, ops);
    axum::serve(
        listener,
        service.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
