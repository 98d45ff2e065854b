use cacheable::cacheable;

#[cacheable(ttl = 60, tags = ["org:{self.org}"])]
async fn free(id: u64) -> u64 {
    id
}

fn main() {}
