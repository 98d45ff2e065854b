use cacheable::{RateLimited, rate_limit};

#[rate_limit(points = 10, roles(admin = 0, free = "ten", admin = 5, guest))]
async fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
