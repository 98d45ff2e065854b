//! The payload codec: what a cached value becomes in the store, and back.
//!
//! Guarantee 10 says a hit returns exactly what the function returned, or the
//! value is not cached. This module keeps it with two parts:
//!
//! 1. **JSON** (`serde_json` with its `float_roundtrip` feature), and
//! 2. a **write-time fidelity check**: a `serde::Serializer` ([`check`]) that
//!    walks the value before it is encoded and rejects the two shapes JSON
//!    cannot carry. Such a value is not written; the call still returns it,
//!    and the rejection is counted in `Stats::errors` as kind `lossy` and logged
//!    (rate-limited) like every other cache error.
//!
//! The hazards, and why each is one:
//!
//! | value | JSON | read back as |
//! |---|---|---|
//! | `f64::NAN`, `±inf` (also `f32`) | `null` | `None` inside an `Option`, a decode error elsewhere |
//! | `Some(x)` where `x` is written as `null`: `None`, `()`, a unit struct, a newtype around one, `Value::Null` | `null` | `None` (so `Some(None)` with `cache_none` read back as `None`) |
//!
//! Everything else in the serde data model goes through JSON and back
//! unchanged, which the property tests in `codec_tests.rs` check over all integer
//! widths (with the `i128`/`u128` extremes), `f32`/`f64` (`-0.0`, subnormals,
//! `MIN`/`MAX`), nested options, unit, tuples, every enum representation,
//! `#[serde(flatten)]`, maps with integer keys, `serde_json::Value`, unicode
//! strings and bytes. A value the check passes but that still does not decode
//! (see *Limits*) is a miss on the read path, counted as a `codec` error: the
//! function runs and its result is returned (guarantee 3).
//!
//! The check runs on writes only (after a miss, next to a computation that
//! usually is a database query); a hit only decodes. It allocates nothing:
//! 2.5–3.8 ns on a user record, 130–180 ns on a `serde_json::Value` of the
//! same data (a map walk), against about 1 µs for the encoding itself.
//!
//! # Why JSON and not a binary format
//!
//! Measured with `cargo bench --bench codec` against CBOR (`ciborium`), per
//! value, two runs on a shared 2-core machine:
//!
//! | value | JSON encode | CBOR encode | JSON decode | CBOR decode | size JSON / CBOR |
//! |---|---|---|---|---|---|
//! | user record (strings, numbers, a `Vec`, `Option`s) | 1.0–1.1 µs | 0.69–1.09 µs | 2.1–2.8 µs | 3.1–4.1 µs | 167 / 129 B |
//! | `serde_json::Value` of it | 0.99 µs | 0.76–1.08 µs | 3.4–3.6 µs | 5.1–6.4 µs | 167 / 129 B |
//!
//! A hit decodes, a write encodes once per miss: JSON decodes a third faster,
//! which is the side that counts, and CBOR's 23 % smaller payload does not pay
//! for that. Beyond speed, JSON wins where it matters here:
//!
//! - Users cache `serde_json::Value`, `#[serde(flatten)]` structs and untagged or
//!   internally tagged enums. Those need a *self-describing* format, which rules
//!   out bincode/postcard; among the self-describing ones (JSON, CBOR,
//!   MessagePack) every one writes `Some(x)` as `x`, so the `Some(None)` hazard
//!   needs the check whatever the format.
//! - JSON payloads are readable in `redis-cli` (after the binary envelope
//!   header), which is how operators debug a cache.
//! - CBOR would carry NaN and infinities, but only those: the check stays
//!   anyway, and is cheap.
//!
//! # Limits
//!
//! - An `i128`/`u128` outside the 64-bit range inside `#[serde(flatten)]`, an
//!   untagged or an internally tagged enum: serde buffers those through its
//!   `Content` type, which has no 128-bit integers, so the value does not
//!   decode. It is a miss every time (a `codec` error), never a wrong value.
//! - An untagged enum whose variants overlap (`A(f64)`, `B(u64)`) decodes to
//!   the first variant that accepts the data, in any self-describing format.
//!   Make the variants distinguishable, or tag the enum.
//! - `Serialize` and `Deserialize` impls that disagree with each other (a
//!   `skip_serializing_if` without a matching `default`, a custom impl) are
//!   the type's own contract, which no codec can check.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};

use crate::error::CacheError;

/// Encodes a payload, or refuses a value that would not read back as written.
///
/// # Errors
/// [`CacheError::Lossy`] for a value with a hazard (see the module docs);
/// [`CacheError::Codec`] when the value's `Serialize` impl fails or JSON
/// cannot express it (a map key that is not a string, a number or a bool).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CacheError> {
    check(value)?;
    serde_json::to_vec(value).map_err(|e| CacheError::codec(&e))
}

/// Decodes a payload.
///
/// # Errors
/// [`CacheError::Codec`] when the bytes are not a `T` (garbage, a changed type
/// without a `version` bump). The message names the position, never the
/// stored data.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::codec(&e))
}

/// Whether `value` survives the trip through [`encode`] and [`decode`].
///
/// # Errors
/// [`CacheError::Lossy`] naming the hazard; [`CacheError::Codec`] when the
/// value's own `Serialize` impl fails.
pub fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), CacheError> {
    match value.serialize(Walk) {
        Ok(_) => Ok(()),
        Err(Reject::Hazard(h)) => Err(CacheError::Lossy(h.as_str())),
        Err(Reject::Custom(msg)) => Err(CacheError::Codec(msg)),
    }
}

/// A value shape that JSON cannot carry faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hazard {
    /// NaN or an infinity: JSON writes `null`.
    NonFinite,
    /// `Some(x)` where `x` is written as `null`: read back as `None`.
    SomeOfNull,
}

impl Hazard {
    fn as_str(self) -> &'static str {
        match self {
            Self::NonFinite => "a NaN or infinite float (JSON writes it as null)",
            Self::SomeOfNull => {
                "`Some` of a value written as null (`Some(None)`, `Some(())`): read back as `None`"
            }
        }
    }
}

#[derive(Debug)]
enum Reject {
    Hazard(Hazard),
    Custom(String),
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hazard(h) => f.write_str(h.as_str()),
            Self::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Reject {}

impl ser::Error for Reject {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// What a walked value is written as, as far as the check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// JSON `null`.
    Null,
    /// Anything else.
    Other,
}

/// The fidelity check: a serializer that writes nothing and fails on a hazard.
/// Human-readable like `serde_json`, so types that serialize differently by
/// format (addresses, timestamps) take the same path as when encoded.
#[derive(Debug, Clone, Copy)]
struct Walk;

type Walked = Result<Shape, Reject>;

fn float(finite: bool) -> Walked {
    if finite {
        Ok(Shape::Other)
    } else {
        Err(Reject::Hazard(Hazard::NonFinite))
    }
}

impl ser::Serializer for Walk {
    type Ok = Shape;
    type Error = Reject;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_i8(self, _: i8) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_i16(self, _: i16) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_i32(self, _: i32) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_i64(self, _: i64) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_i128(self, _: i128) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_u8(self, _: u8) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_u16(self, _: u16) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_u32(self, _: u32) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_u64(self, _: u64) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_u128(self, _: u128) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_f32(self, v: f32) -> Walked {
        float(v.is_finite())
    }
    fn serialize_f64(self, v: f64) -> Walked {
        float(v.is_finite())
    }
    fn serialize_char(self, _: char) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_str(self, _: &str) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_bytes(self, _: &[u8]) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_none(self) -> Walked {
        Ok(Shape::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Walked {
        match value.serialize(self)? {
            Shape::Null => Err(Reject::Hazard(Hazard::SomeOfNull)),
            Shape::Other => Ok(Shape::Other),
        }
    }
    fn serialize_unit(self) -> Walked {
        Ok(Shape::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Walked {
        Ok(Shape::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Walked {
        Ok(Shape::Other)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Walked {
        // serde_json writes a newtype struct as its content.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Walked {
        value.serialize(self)?;
        Ok(Shape::Other)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Reject> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Reject> {
        Ok(self)
    }
}

/// Walks one element of a compound value; its shape does not matter (a `null`
/// element of a sequence, map or struct reads back as written).
fn element<T: Serialize + ?Sized>(value: &T) -> Result<(), Reject> {
    value.serialize(Walk).map(drop)
}

impl ser::SerializeSeq for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeTuple for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeTupleStruct for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeTupleVariant for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeMap for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Reject> {
        element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeStruct for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

impl ser::SerializeStructVariant for Walk {
    type Ok = Shape;
    type Error = Reject;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Reject> {
        element(value)
    }
    fn end(self) -> Walked {
        Ok(Shape::Other)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
