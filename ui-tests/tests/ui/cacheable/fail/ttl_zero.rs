use cacheable::cacheable;

#[cacheable(ttl = 0)]
async fn zero(id: u64) -> u64 {
    id
}

#[cacheable(ttl = "0m")]
async fn zero_minutes(id: u64) -> u64 {
    id
}

#[cacheable(ttl = "5 minutes")]
async fn no_unit(id: u64) -> u64 {
    id
}

fn main() {}
