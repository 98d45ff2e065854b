use cacheable::cacheable;

#[cacheable(ttl = 60, policy = "profile")]
async fn both(id: u64) -> u64 {
    id
}

fn main() {}
