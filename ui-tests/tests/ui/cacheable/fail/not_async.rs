use cacheable::cacheable;

#[cacheable(ttl = 60)]
fn not_async(id: u64) -> u64 {
    id
}

fn main() {
    let _: u64 = not_async(1);
}
