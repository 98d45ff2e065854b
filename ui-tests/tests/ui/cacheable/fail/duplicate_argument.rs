use cacheable::cacheable;

#[cacheable(ttl = 60, tags = ["a"], ttl = 30)]
async fn twice(id: u64) -> u64 {
    id
}

#[cacheable(global, global)]
async fn flag_twice(id: u64) -> u64 {
    id
}

fn main() {}
