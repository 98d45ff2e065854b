use cacheable::{RateLimited, rate_limit};

#[rate_limit(points = 0, duration = 60)]
async fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
