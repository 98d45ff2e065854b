// Generic functions: type parameters, lifetimes, where-clauses are kept.
use cacheable::cacheable;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cacheable(ttl = 60)]
async fn first<T>(items: Vec<T>) -> Option<T>
where
    T: Serialize + DeserializeOwned + Clone,
{
    items.first().cloned()
}

#[cacheable(ttl = 60, tags = ["by:{who}"])]
pub(crate) async fn borrowed<'a, K: Serialize + ?Sized>(who: &'a str, key: &'a K) -> usize {
    who.len() + usize::from(serde_json::to_string(key).is_ok())
}

#[cacheable(ttl = 60)]
async fn constant<const N: usize>(x: u8) -> usize {
    N + usize::from(x)
}

fn main() {
    let _ = first(vec![1u8]);
    let _ = borrowed("a", "b");
    let _ = constant::<2>(1);
}
