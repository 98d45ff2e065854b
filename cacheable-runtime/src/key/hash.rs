//! The argument hasher: `serde` serializations streamed into xxh3-128, with
//! framing (type markers, length prefixes) so that different argument lists
//! never produce the same byte stream, and maps combined order-independently.

use serde::ser::{self, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::Identity;

/// Streams `serde` serializations of arguments into xxh3-128.
///
/// Each value is framed (type markers, length prefixes) so that different
/// argument lists never produce the same byte stream.
#[derive(Clone)]
pub struct KeyHasher {
    state: Xxh3,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    /// A hasher with no arguments fed yet.
    pub fn new() -> Self {
        Self { state: Xxh3::new() }
    }

    /// Feeds the identity of the call site; the macro does this before the
    /// first argument, so two sites never share a hash.
    pub fn identity(&mut self, id: Identity) {
        self.state.update(&[0x1D]);
        self.state.update(&id.0.to_le_bytes());
    }

    /// Feeds one argument.
    ///
    /// # Errors
    /// When the argument's `Serialize` impl fails (a custom impl returning an error).
    pub fn arg<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.state.update(&[0xA5]);
        value.serialize(&mut HashSer {
            state: &mut self.state,
        })
    }

    /// The 128-bit digest.
    pub fn finish(&self) -> u128 {
        self.state.digest128()
    }

    /// The digest as 32 lowercase hex digits, the form used in keys.
    pub fn finish_hex(&self) -> String {
        format!("{:032x}", self.finish())
    }
}

/// A `Serialize` impl failed while hashing an argument.
#[derive(Debug, thiserror::Error)]
#[error("argument could not be serialized for the cache key: {0}")]
pub struct HashError(String);

impl ser::Error for HashError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

pub(super) struct HashSer<'a> {
    pub(super) state: &'a mut Xxh3,
}

impl HashSer<'_> {
    fn tag(&mut self, t: u8) {
        self.state.update(&[t]);
    }
    fn bytes(&mut self, t: u8, b: &[u8]) {
        self.state.update(&[t]);
        self.state.update(&(b.len() as u64).to_le_bytes());
        self.state.update(b);
    }
}

macro_rules! num {
    ($($f:ident $t:ty => $tag:literal),* $(,)?) => {$(
        fn $f(self, v: $t) -> Result<(), HashError> {
            self.tag($tag);
            self.state.update(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut HashSer<'_> {
    type Ok = ();
    type Error = HashError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = MapHasher<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    num! {
        serialize_i8 i8 => 1, serialize_i16 i16 => 2, serialize_i32 i32 => 3, serialize_i64 i64 => 4,
        serialize_i128 i128 => 5, serialize_u8 u8 => 6, serialize_u16 u16 => 7, serialize_u32 u32 => 8,
        serialize_u64 u64 => 9, serialize_u128 u128 => 10, serialize_f32 f32 => 11, serialize_f64 f64 => 12,
    }

    fn serialize_bool(self, v: bool) -> Result<(), HashError> {
        self.tag(if v { 13 } else { 14 });
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), HashError> {
        self.tag(15);
        self.state.update(&u32::from(v).to_le_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), HashError> {
        self.bytes(16, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), HashError> {
        self.bytes(17, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), HashError> {
        self.tag(18);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), HashError> {
        self.tag(19);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), HashError> {
        self.tag(20);
        Ok(())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), HashError> {
        self.bytes(21, name.as_bytes());
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), HashError> {
        self.tag(22);
        self.state.update(&index.to_le_bytes());
        self.bytes(16, variant.as_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        self.tag(23);
        self.state.update(&index.to_le_bytes());
        self.bytes(16, variant.as_bytes());
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, HashError> {
        self.tag(24);
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, HashError> {
        self.tag(25);
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, HashError> {
        self.tag(25);
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, HashError> {
        self.tag(26);
        self.state.update(&index.to_le_bytes());
        self.bytes(16, variant.as_bytes());
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapHasher<'a>, HashError> {
        self.tag(27);
        Ok(MapHasher {
            state: self.state,
            sum: 0,
            xor: 0,
            count: 0,
            entry: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, HashError> {
        self.tag(28);
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, HashError> {
        self.tag(29);
        self.state.update(&index.to_le_bytes());
        self.bytes(16, variant.as_bytes());
        Ok(Compound {
            state: self.state,
            count: 0,
        })
    }
}

/// Sequences, tuples and structs: elements in order, then the count.
pub struct Compound<'a> {
    state: &'a mut Xxh3,
    count: u64,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.count += 1;
        value.serialize(&mut HashSer { state: self.state })
    }
    fn end(self) -> Result<(), HashError> {
        self.state.update(&[30]);
        self.state.update(&self.count.to_le_bytes());
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.element(value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.element(value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.element(value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.element(value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        self.state.update(&[31]);
        self.state.update(&(key.len() as u64).to_le_bytes());
        self.state.update(key.as_bytes());
        self.element(value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), HashError> {
        Compound::end(self)
    }
}

/// Maps: each entry is hashed on its own, and the entry digests are combined
/// with order-independent sums, so iteration order does not change the key.
pub struct MapHasher<'a> {
    state: &'a mut Xxh3,
    sum: u128,
    xor: u128,
    count: u64,
    entry: Option<Xxh3>,
}

impl ser::SerializeMap for MapHasher<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), HashError> {
        let mut entry = Xxh3::new();
        key.serialize(&mut HashSer { state: &mut entry })?;
        self.entry = Some(entry);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        let mut entry = self
            .entry
            .take()
            .ok_or_else(|| HashError("map value without a key".into()))?;
        entry.update(&[32]);
        value.serialize(&mut HashSer { state: &mut entry })?;
        let d = entry.digest128();
        self.sum = self.sum.wrapping_add(d);
        self.xor ^= d.rotate_left(17);
        self.count += 1;
        Ok(())
    }
    fn end(self) -> Result<(), HashError> {
        self.state.update(&self.sum.to_le_bytes());
        self.state.update(&self.xor.to_le_bytes());
        self.state.update(&self.count.to_le_bytes());
        Ok(())
    }
}
