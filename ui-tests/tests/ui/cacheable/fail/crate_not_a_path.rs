// `crate = ".."` must be a path: reported on the literal.
use cacheable::cacheable;

#[cacheable(crate = "my cache", ttl = 60)]
async fn not_a_path(id: u64) -> u64 {
    id
}

fn main() {}
