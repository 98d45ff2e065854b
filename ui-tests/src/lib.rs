//! Empty: the trybuild cases are in `tests/` (see `tests/ui.rs`).
