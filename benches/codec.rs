//! Payload codecs, per value: the cache's own (`serde_json` with the write-time
//! fidelity check of guarantee 10) against raw `serde_json` and CBOR
//! (`ciborium`, a self-describing binary format), on a typical cached struct
//! (a user record: strings, numbers, a `Vec`, an `Option`) and on a
//! `serde_json::Value` of the same data. No Redis: this isolates the codec.
//!
//! Run: `cargo bench --bench codec`
//! Groups: `encode/<value>`, `decode/<value>`, and `check/<value>` (the
//! fidelity check alone, which runs on writes only).

use std::hint::black_box;

use cacheable::__private::{codec_check, codec_decode, codec_encode};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    score: f64,
    age: u32,
    roles: Vec<String>,
    manager: Option<u64>,
    nickname: Option<String>,
}

fn user() -> User {
    User {
        id: 1_234_567,
        name: "Ada Lovelace".into(),
        email: "ada@analytical-engines.example".into(),
        score: 97.25,
        age: 36,
        roles: vec!["admin".into(), "author".into(), "reviewer".into()],
        manager: Some(42),
        nickname: None,
    }
}

fn cbor_encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(v, &mut out).expect("cbor encode");
    out
}

fn cbor_decode<T: DeserializeOwned>(b: &[u8]) -> T {
    ciborium::from_reader(b).expect("cbor decode")
}

fn bench_value<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = codec_encode(value).expect("encode");
    let cbor = cbor_encode(value);
    assert_eq!(codec_decode::<T>(&json).expect("decode"), *value);
    assert_eq!(cbor_decode::<T>(&cbor), *value);
    println!(
        "{name}: json {} bytes, cbor {} bytes",
        json.len(),
        cbor.len()
    );

    let mut g = c.benchmark_group(format!("encode/{name}"));
    g.bench_function("cacheable (json + check)", |b| {
        b.iter(|| codec_encode(black_box(value)).expect("encode"));
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(value)).expect("encode"));
    });
    g.bench_function("ciborium", |b| {
        b.iter(|| cbor_encode(black_box(value)));
    });
    g.finish();

    let mut g = c.benchmark_group(format!("decode/{name}"));
    g.bench_function("cacheable (json)", |b| {
        b.iter(|| codec_decode::<T>(black_box(&json)).expect("decode"));
    });
    g.bench_function("ciborium", |b| {
        b.iter(|| cbor_decode::<T>(black_box(&cbor)));
    });
    g.finish();

    let mut g = c.benchmark_group(format!("check/{name}"));
    g.bench_function("fidelity check", |b| {
        b.iter(|| codec_check(black_box(value)).expect("no hazard"));
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let u = user();
    bench_value(c, "user", &u);
    let v = serde_json::to_value(&u).expect("to value");
    bench_value(c, "value", &v);
}

criterion_group!(benches, codecs);
criterion_main!(benches);
