//! The value every benchmark caches: a ~200-byte profile, the same on the
//! cached side and the raw redis-rs or moka side of each comparison.

use serde::{Deserialize, Serialize};

/// A user profile of about 200 bytes in JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub bio: String,
    pub roles: Vec<String>,
}

/// The profile of `id`.
pub fn profile_value(id: u64) -> Profile {
    Profile {
        id,
        name: "Ada Lovelace".into(),
        email: "ada@analytical-engines.example".into(),
        bio: "Wrote the first published algorithm for a machine; enjoys notes on notes.".into(),
        roles: vec!["admin".into(), "author".into(), "reviewer".into()],
    }
}
