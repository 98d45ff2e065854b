use cacheable::cache_evict;

#[cache_evict]
async fn nothing(id: u64) {
    let _ = id;
}

#[cache_evict(tags = [])]
async fn empty(id: u64) {
    let _ = id;
}

#[cache_evict(tags = ["user:{idd}"], ttl = 5)]
fn several(id: u64) {
    let _ = id;
}

fn main() {}
