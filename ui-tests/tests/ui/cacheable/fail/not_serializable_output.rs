use cacheable::cacheable;

struct User;

#[cacheable(ttl = 60)]
async fn plain(id: u64) -> User {
    let _ = id;
    User
}

#[cacheable(ttl = 60)]
async fn in_result(id: u64) -> Result<User, String> {
    let _ = id;
    Ok(User)
}

/// `Serialize` only: a hit could not read it back.
#[derive(serde::Serialize)]
struct Article {
    slug: String,
}

#[cacheable(ttl = 60)]
async fn in_json(slug: String) -> Result<axum::Json<Article>, String> {
    Ok(axum::Json(Article { slug }))
}

#[cacheable(ttl = 60)]
async fn in_vec(id: u64) -> Option<Vec<User>> {
    let _ = id;
    None
}

fn main() {}
