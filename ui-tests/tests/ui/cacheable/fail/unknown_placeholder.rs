use cacheable::cacheable;

#[cacheable(ttl = 60, tags = ["user:{user_id}"])]
async fn tag(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, key = "{lang}:{id}")]
async fn key(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, skip(db))]
async fn skip(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, tags = ["user:{id"])]
async fn unclosed(id: u64) -> u64 {
    id
}

fn main() {}
