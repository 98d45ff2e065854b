//! Compile-time behaviour of the attribute macros (trybuild): every
//! attribute has `tests/ui/<attribute>/pass/*.rs` (must compile) and
//! `tests/ui/<attribute>/fail/*.rs` with the expected `.stderr`.
//!
//! Regenerate the `.stderr` files only with `TRYBUILD=overwrite` on the
//! pinned toolchain, and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/*/pass/*.rs");
    t.compile_fail("tests/ui/*/fail/*.rs");
}
