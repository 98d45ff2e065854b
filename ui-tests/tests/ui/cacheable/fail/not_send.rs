// A body that holds an `Rc` across an await is not `Send`, and neither is
// the cached fn's future: the macro adds no bound and hides nothing.
use std::rc::Rc;

use cacheable::cacheable;

fn assert_send<T: Send>(_: T) {}

#[cacheable(ttl = 60)]
async fn not_send(id: u64) -> u64 {
    let rc = Rc::new(id);
    tokio::task::yield_now().await;
    *rc
}

fn main() {
    assert_send(not_send(1));
}
