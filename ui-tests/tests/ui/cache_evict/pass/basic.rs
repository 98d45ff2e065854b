// `#[cache_evict]` on free fns: Result (evicts on Ok), plain outputs
// (always evicts), all_tenants, skip, and `?` in the body.
use cacheable::cache_evict;

struct Db;

#[cache_evict(tags = ["user:{id}", "users"], skip(db))]
async fn rename(db: &Db, id: u64, name: &str) -> Result<(), std::num::ParseIntError> {
    let _ = (db, name);
    let _n: u64 = "1".parse()?;
    if id == 0 {
        return Ok(());
    }
    Ok(())
}

#[cache_evict(tags = ["plans"], all_tenants)]
async fn reset_plans() {}

fn main() {
    let _ = rename(&Db, 1, "x");
    let _ = reset_plans();
}
