use cacheable::{RateLimited, rate_limit};

#[rate_limit(points = 10, algorithm = "leaky_bucket")]
async fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
