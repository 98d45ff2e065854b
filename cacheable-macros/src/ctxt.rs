//! Error collection: every problem found while parsing and validating an
//! attribute is reported in one compile, combined with
//! [`syn::Error::combine`] (the approach of `serde_derive`'s `Ctxt`).

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// Collects spanned errors; [`Ctxt::check`] turns them into one `syn::Error`.
///
/// Takes `&self` so that several parsers and validators can share one context.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: RefCell<Option<syn::Error>>,
}

impl Ctxt {
    /// An empty context.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records an error spanned on `tokens` (first to last token).
    pub(crate) fn error_spanned_by(&self, tokens: impl ToTokens, msg: impl Display) {
        self.push(syn::Error::new_spanned(tokens.into_token_stream(), msg));
    }

    /// Records an error at `span`.
    pub(crate) fn error_at(&self, span: Span, msg: impl Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// Records an error produced by a parser.
    pub(crate) fn push(&self, err: syn::Error) {
        let mut errors = self.errors.borrow_mut();
        match errors.as_mut() {
            Some(all) => all.combine(err),
            None => *errors = Some(err),
        }
    }

    /// Records the error of `result`, if any, and returns its value.
    pub(crate) fn ok<T>(&self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// Whether an error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        self.errors.borrow().is_some()
    }

    /// `Ok` when nothing was recorded, else every error combined.
    pub(crate) fn check(self) -> syn::Result<()> {
        match self.errors.into_inner() {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }
}

/// The output of an attribute that failed: the errors, and beside them the
/// user's item unchanged, so that its call sites still type-check and the
/// errors do not cascade (as `tokio::main` does).
pub(crate) fn with_item(err: &syn::Error, item: TokenStream) -> TokenStream {
    let mut out = err.to_compile_error();
    out.extend(item);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_all_errors() {
        let cx = Ctxt::new();
        assert!(!cx.has_errors());
        cx.error_at(Span::call_site(), "first");
        cx.error_spanned_by(quote::quote!(a b), "second");
        assert_eq!(
            cx.ok::<()>(Err(syn::Error::new(Span::call_site(), "third"))),
            None
        );
        assert!(cx.has_errors());
        let err = cx.check().unwrap_err();
        let msgs: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs, ["first", "second", "third"]);
    }

    #[test]
    fn empty_context_is_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    fn item_is_kept_beside_errors() {
        let err = syn::Error::new(Span::call_site(), "bad");
        let out = with_item(
            &err,
            quote::quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with("fn f () { }"), "{out}");
    }
}
