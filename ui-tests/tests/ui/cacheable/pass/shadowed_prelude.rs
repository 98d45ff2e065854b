// Generated code names nothing through the user's scope: a module that
// shadows `Result`, `Option`, `String`, `Vec`, `Ok`, `Some` and `core` still
// compiles.
#![allow(dead_code, non_camel_case_types)]

mod core {}
mod std {}

struct Result;
struct Option;
struct String;
struct Vec;
struct Ok;
struct Some;
struct Box;
struct format;

use ::cacheable::{cache_evict, cacheable};

#[cacheable(ttl = 60, tags = ["t:{id}"], key = "{id}")]
async fn keyed(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, tags = ["t:{id}"])]
async fn hashed(id: u64, name: &str) -> ::core::result::Result<u64, ()> {
    ::core::result::Result::Ok(id + name.len() as u64)
}

#[cacheable(ttl = 60)]
async fn none() -> ::core::option::Option<u8> {
    ::core::option::Option::None
}

#[cache_evict(tags = ["t:{id}"])]
async fn evict(id: u64) -> ::core::result::Result<(), ()> {
    let _ = id;
    ::core::result::Result::Ok(())
}

fn main() {
    let _ = keyed(1);
    let _ = hashed(1, "a");
    let _ = none();
    let _ = evict(1);
}
