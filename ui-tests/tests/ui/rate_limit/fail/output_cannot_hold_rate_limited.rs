use cacheable::rate_limit;

#[derive(Debug)]
struct DbError;

struct Page;

#[rate_limit(points = 10)]
async fn error_without_from() -> Result<(), DbError> {
    Ok(())
}

#[rate_limit(points = 10)]
async fn plain_output() -> Page {
    Page
}

#[rate_limit(points = 10)]
async fn nothing() {}

fn main() {}
