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

fn main() {}
