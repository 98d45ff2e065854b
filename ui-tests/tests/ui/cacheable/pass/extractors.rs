// axum extractor patterns as parameters: `Path(id)`, `Json(form)`,
// `State(state)` (left out of the key), `Query(q)`; `Json<T>` outputs.
// Extractors written without a pattern (`q: Query<T>`, also by full path)
// are keyed by the value they carry.
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

/// A value-carrying extractor under another crate's name: matched by the
/// last path segment, like axum's.
struct Form<T>(T);

#[cacheable(ttl = 30, tags = ["page:{page.0}"])]
async fn listing(
    State(_state): State<AppState>,
    q: Query<Page>,
    page: axum::extract::Path<u32>,
    login: Json<Login>,
    form: &Form<Page>,
) -> Json<String> {
    Json(format!("{}{}{}{}", q.n, page.0, login.email, form.0.n))
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
    let _ = listing(
        State(state.clone()),
        Query(Page { n: 1 }),
        Path(2),
        Json(Login { email: "a".into() }),
        &Form(Page { n: 3 }),
    );
    let _ = delete_user(State(state), Path(1));
}
