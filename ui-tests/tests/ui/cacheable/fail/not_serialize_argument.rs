use cacheable::cacheable;

struct Db;

#[cacheable(ttl = 60)]
async fn get_user(db: &Db, id: u64) -> u64 {
    let _ = db;
    id
}

struct Connection;
struct Extension<T>(T);

#[cacheable(ttl = 60)]
async fn pattern(Extension(conn): Extension<Connection>) -> u64 {
    let _ = conn;
    1
}

fn main() {}
