use cacheable::{cache_evict, cacheable};

struct NotDisplay;

#[cacheable(ttl = 60, tags = ["user:{id + 1}"])]
async fn expression(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, tags = ["user:{ret}"])]
async fn named_ret(ret: u64) -> u64 {
    ret
}

#[cacheable(ttl = 60, key = "{ret}")]
async fn ret_in_key(id: u64) -> u64 {
    id
}

#[cache_evict(tags = ["user:{id.get(n)}"])]
async fn variable_argument(id: Vec<u64>, n: usize) {
    let _ = (id, n);
}

#[cacheable(ttl = 60, tags = ["v:{v}"], skip(v))]
async fn not_display(v: NotDisplay) -> u64 {
    let _ = v;
    1
}

fn main() {}
