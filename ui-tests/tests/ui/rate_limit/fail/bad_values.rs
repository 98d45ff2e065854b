use cacheable::{RateLimited, rate_limit};

#[rate_limit(points = 10, duration = "5 minutes", by = "session", on_error = "retry", cost = 11)]
async fn f() -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit(points = 10, key = "{email}", by = "ip")]
async fn g(name: String) -> Result<(), RateLimited> {
    let _ = name;
    Ok(())
}

#[rate_limit(duration = 60)]
fn not_async() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
