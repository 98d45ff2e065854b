use cacheable::cacheable;

#[cacheable(tll = 60)]
async fn typo(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, cache::none)]
async fn path(id: u64) -> u64 {
    id
}

fn main() {}
