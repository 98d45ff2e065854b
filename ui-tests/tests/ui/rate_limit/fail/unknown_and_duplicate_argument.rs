use cacheable::{RateLimited, rate_limit};

#[rate_limit(points = 10, point = 3, duration = 60, duration = "1m")]
async fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
