//! `crate = "path"`: where generated code finds the runtime, for users who
//! rename the dependency or reach `cacheable` through a re-export (as
//! `#[serde(crate = "..")]` and `#[tokio::main(crate = "..")]` do).
//!
//! Generated code names runtime items through [`Krate::private`]:
//! `::cacheable::__private` by default, `<path>::__private` with the
//! argument. Template code (`template.rs`) is written against
//! `::cacheable::__private`; [`Krate::rebase`] moves it to the chosen path.

use proc_macro2::{Ident, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::meta::ParseNestedMeta;
use syn::{LitStr, Path};

/// The path of the `cacheable` crate in the user's code.
#[derive(Default)]
pub(crate) struct Krate {
    /// `crate = ".."`, or `None` for `::cacheable`.
    path: Option<Path>,
}

impl Krate {
    /// The path given by `crate = ".."`, if any.
    pub(crate) fn new(path: Option<Path>) -> Self {
        Krate { path }
    }

    /// Parses `= "my_cache"`, `= "::my_cache"` or `= "crate::deps::cache"`;
    /// errors on the literal when it is not a module path.
    pub(crate) fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
        let lit: LitStr = meta.value()?.parse()?;
        lit.parse_with(Path::parse_mod_style).map_err(|_| {
            syn::Error::new(
                lit.span(),
                format_args!(
                    "`crate` expects the path of the `cacheable` crate, as in `crate = \"my_cache\"`; \
                     `{}` is not a path",
                    lit.value()
                ),
            )
        })
    }

    /// `<path>::__private`, every token at the path's own span (the
    /// literal's, so it resolves where the user wrote the attribute).
    pub(crate) fn private(&self) -> TokenStream {
        match &self.path {
            Some(path) => {
                let span = path
                    .segments
                    .last()
                    .map_or_else(Span::call_site, |s| s.ident.span());
                let private = Ident::new("__private", span);
                let mut sep = TokenStream::new();
                let mut first = Punct::new(':', Spacing::Joint);
                first.set_span(span);
                let mut second = Punct::new(':', Spacing::Alone);
                second.set_span(span);
                sep.extend([TokenTree::Punct(first), TokenTree::Punct(second)]);
                quote!(#path #sep #private)
            }
            None => quote!(::cacheable::__private),
        }
    }

    /// [`Krate::private`] with every token at `span`, for code whose errors
    /// must point at one place of the user's source.
    pub(crate) fn private_at(&self, span: Span) -> TokenStream {
        crate::expand::respan(self.private(), span)
    }

    /// `tokens` with each `::cacheable::__private` replaced by
    /// [`Krate::private`] (at the span of the replaced `cacheable`). Only
    /// for tokens the macro generated, never the user's.
    pub(crate) fn rebase(&self, tokens: TokenStream) -> TokenStream {
        if self.path.is_none() {
            return tokens;
        }
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut out = TokenStream::new();
        let mut i = 0;
        while i < trees.len() {
            if let Some(span) = default_private_at(&trees[i..]) {
                out.extend(self.private_at(span));
                i += 6;
                continue;
            }
            match &trees[i] {
                TokenTree::Group(g) => {
                    let mut g2 = proc_macro2::Group::new(g.delimiter(), self.rebase(g.stream()));
                    g2.set_span(g.span());
                    out.extend([TokenTree::Group(g2)]);
                }
                t => t.to_tokens(&mut out),
            }
            i += 1;
        }
        out
    }
}

/// The span of `cacheable` when `trees` starts with `:: cacheable :: __private`.
fn default_private_at(trees: &[TokenTree]) -> Option<Span> {
    let [
        TokenTree::Punct(a),
        TokenTree::Punct(b),
        TokenTree::Ident(krate),
        TokenTree::Punct(c),
        TokenTree::Punct(d),
        TokenTree::Ident(private),
        ..,
    ] = trees
    else {
        return None;
    };
    let colons = [a, b, c, d].iter().all(|p| p.as_char() == ':');
    (colons && krate == "cacheable" && private == "__private").then(|| krate.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krate(path: &str) -> Krate {
        Krate::new(Some(syn::parse_str(path).unwrap()))
    }

    #[test]
    fn private_path() {
        assert_eq!(
            Krate::default().private().to_string(),
            ":: cacheable :: __private"
        );
        assert_eq!(
            krate("my_cache").private().to_string(),
            "my_cache :: __private"
        );
        assert_eq!(
            krate("crate::deps::cache").private().to_string(),
            "crate :: deps :: cache :: __private"
        );
    }

    #[test]
    fn rebases_nested_template_code() {
        let tokens = quote!(::cacheable::__private::render(::core::format_args!(
            "{}",
            &[::cacheable::__private::KeyPart::Text("x")]
        )));
        assert_eq!(
            krate("::renamed").rebase(tokens.clone()).to_string(),
            quote!(::renamed::__private::render(::core::format_args!(
                "{}",
                &[::renamed::__private::KeyPart::Text("x")]
            )))
            .to_string()
        );
        assert_eq!(
            Krate::default().rebase(tokens.clone()).to_string(),
            tokens.to_string()
        );
        // Only the whole `::cacheable::__private` prefix is replaced.
        let other = quote!(::cacheable::Cache, cacheable::__private::x);
        assert_eq!(
            krate("renamed").rebase(other.clone()).to_string(),
            other.to_string()
        );
    }
}
