// axum extractor patterns as parameters: `Path(id)`, `Json(form)`,
// `State(state)` (left out of the key), `Query(q)`; `Json<T>` outputs.
use axum::Json;
use axum::extract::{Path, Query, State};
use cacheable::{cache_evict, cacheable};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct AppState {
    _pool: std::sync::Arc<()>,
}

#[derive(Serialize, Deserialize)]
struct Login {
    email: String,
}

#[derive(Serialize, Deserialize)]
struct Session {
    token: String,
}

#[derive(Serialize, Deserialize)]
struct Page {
    n: u32,
}

#[cacheable(ttl = 30, tags = ["user:{id}"])]
async fn get_user(State(_state): State<AppState>, Path(id): Path<u64>) -> Json<u64> {
    Json(id)
}

#[cacheable(ttl = 30, key = "{form.email}")]
async fn login(Json(form): Json<Login>) -> Result<Json<Session>, String> {
    Ok(Json(Session { token: form.email }))
}

#[cacheable(ttl = 30)]
async fn page(Path((org, id)): Path<(String, u32)>, Query(q): Query<Page>) -> Option<Json<String>> {
    Some(Json(format!("{org}{id}{}", q.n)))
}

#[cache_evict(tags = ["user:{id}"])]
async fn delete_user(State(_state): State<AppState>, Path(id): Path<u64>) -> Json<()> {
    let _ = id;
    Json(())
}

fn main() {
    let state = AppState {
        _pool: std::sync::Arc::new(()),
    };
    let _ = get_user(State(state.clone()), Path(1));
    let _ = login(Json(Login { email: "a".into() }));
    let _ = page(Path(("o".into(), 1)), Query(Page { n: 1 }));
    let _ = delete_user(State(state), Path(1));
}
