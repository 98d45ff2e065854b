//! The function shape the attributes accept: an `async fn` (free function,
//! inherent or trait-impl method) with a body.
//!
//! Only the signature is parsed; the body stays an opaque token group, so a
//! body that uses syntax newer than `syn` still expands.
//!
//! Over 400 lines only with its unit tests (about 130, at the end); left in
//! place while the macro arguments are being reworked.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, Type, Visibility,
};

use crate::ctxt::Ctxt;

/// A parsed `fn` item: signature parsed, body kept as tokens.
pub(crate) struct AsyncFn {
    /// Outer attributes and doc comments, in order.
    pub(crate) attrs: Vec<Attribute>,
    /// Visibility.
    pub(crate) vis: Visibility,
    /// The signature, token for token.
    pub(crate) sig: Signature,
    /// The body: a brace-delimited group, never looked into.
    pub(crate) body: Group,
    /// The span of `self` when the fn has a receiver.
    pub(crate) receiver: Option<Span>,
    /// The typed parameters (the receiver excluded), in order.
    pub(crate) params: Vec<Param>,
    /// The return type and what kind of output it is.
    pub(crate) output: Output,
}

/// One typed parameter, `pat: ty`.
pub(crate) struct Param {
    /// The pattern: `id`, `mut id`, `Path(id)`, `Json(form)`, `(a, b)`, `_` …
    pub(crate) pat: Pat,
    /// The declared type.
    pub(crate) ty: Type,
    /// The identifiers the pattern binds, in source order (`[id]` for
    /// `Path(id)`; empty for `_`).
    pub(crate) bindings: Vec<Ident>,
    /// The last path segment of the type, if it is a path (`State` for
    /// `State<AppState>`, `Path` for `axum::extract::Path<u64>`).
    pub(crate) type_name: Option<Ident>,
}

impl Param {
    /// Whether the parameter is a plain identifier (`id: u64`, `mut id: u64`),
    /// so that its declared type is the type of its binding.
    pub(crate) fn is_simple(&self) -> bool {
        matches!(&self.pat, Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none())
    }

    /// Whether the type is an axum `State<..>` extractor (by its last path
    /// segment), which is left out of default keys.
    pub(crate) fn is_state_extractor(&self) -> bool {
        self.type_name.as_ref().is_some_and(|i| i == "State")
    }

    /// `Some` when the parameter is a plain identifier whose type is an
    /// axum extractor that carries a value (`q: Query<T>`, `Path<T>`,
    /// `Json<T>`, `Form<T>`, `Extension<T>`, by the last path segment, with
    /// one type argument): the key hashes the carried value, since the
    /// extractor itself is not `Serialize`.
    pub(crate) fn carrier(&self) -> Option<Carrier<'_>> {
        const CARRIERS: &[&str] = &["Query", "Path", "Json", "Form", "Extension"];
        if !self.is_simple() {
            return None;
        }
        let mut ty = peel(&self.ty);
        while let Type::Reference(r) = ty {
            ty = peel(&r.elem);
        }
        let Type::Path(path) = ty else {
            return None;
        };
        let last = path.path.segments.last()?;
        if path.qself.is_some() || !CARRIERS.iter().any(|c| last.ident == c) {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        let [GenericArgument::Type(inner)] = args.args.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let mut pattern = path.path.clone();
        if let Some(last) = pattern.segments.last_mut() {
            last.arguments = PathArguments::None;
        }
        Some(Carrier { pattern, inner })
    }
}

/// A value-carrying extractor parameter (`q: Query<Filter>`).
pub(crate) struct Carrier<'a> {
    /// The type's path without its type argument (`Query`,
    /// `axum::extract::Query`), for the pattern `Query(value)`: it only
    /// matches a tuple struct with exactly one public field, so the whole
    /// extractor is in the key, or the code does not compile.
    pub(crate) pattern: syn::Path,
    /// The carried type (`Filter`).
    pub(crate) inner: &'a Type,
}

/// The return type of the fn.
pub(crate) struct Output {
    /// `None` for `()` written as no return type.
    pub(crate) ty: Option<Type>,
    /// How the output is cached, read from the type's syntax.
    pub(crate) kind: OutputKind,
}

/// How an output is handled, chosen from the return type's syntax (last
/// path segment), nested: `Result<Option<Json<T>>, E>` is
/// `Result(Option(Json(Plain)))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutputKind {
    /// Cached as it is.
    Plain,
    /// `Result<T, E>` (also aliases named `Result<T>` such as `io::Result<T>`):
    /// only `Ok` is cached.
    Result(Box<OutputKind>),
    /// `Option<T>`: only `Some`, unless `cache_none`.
    Option(Box<OutputKind>),
    /// `Json<T>` (axum): `T` is cached.
    Json(Box<OutputKind>),
}

/// The wrappers the output kinds recognise.
#[derive(Clone, Copy)]
enum Wrapper {
    Result,
    Option,
    Json,
}

/// `Some((wrapper, inner))` when `ty` is `Result<inner, ..>`, `Option<inner>`
/// or `Json<inner>` (by the last path segment).
fn unwrap(ty: &Type) -> Option<(Wrapper, &Type)> {
    let Type::Path(path) = peel(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    let wrapper = if last.ident == "Result" {
        Wrapper::Result
    } else if last.ident == "Option" {
        Wrapper::Option
    } else if last.ident == "Json" {
        Wrapper::Json
    } else {
        return None;
    };
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let inner = args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })?;
    Some((wrapper, inner))
}

impl Output {
    /// The type whose value is cached: `T` in `Result<Option<Json<T>>, E>`.
    pub(crate) fn value_type(&self) -> Option<&Type> {
        let mut ty = self.ty.as_ref()?;
        while let Some((_, inner)) = unwrap(ty) {
            ty = inner;
        }
        Some(ty)
    }
}

impl OutputKind {
    /// Reads the kind of `ty`.
    pub(crate) fn of(ty: &Type) -> Self {
        match unwrap(ty) {
            None => OutputKind::Plain,
            Some((wrapper, inner)) => {
                let inner = Box::new(OutputKind::of(inner));
                match wrapper {
                    Wrapper::Result => OutputKind::Result(inner),
                    Wrapper::Option => OutputKind::Option(inner),
                    Wrapper::Json => OutputKind::Json(inner),
                }
            }
        }
    }

    /// Whether the outermost kind is `Result`.
    pub(crate) fn is_result(&self) -> bool {
        matches!(self, OutputKind::Result(_))
    }
}

/// Strips parentheses and invisible groups around a type.
fn peel(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(p) => ty = &p.elem,
            Type::Group(g) => ty = &g.elem,
            _ => return ty,
        }
    }
}

impl Parse for AsyncFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body = if input.peek(syn::token::Brace) {
            let body: Group = input.parse()?;
            debug_assert_eq!(body.delimiter(), Delimiter::Brace);
            body
        } else {
            return Err(syn::Error::new_spanned(
                &sig,
                "expected a function with a body",
            ));
        };
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function body"));
        }
        let mut receiver = None;
        let mut params = Vec::new();
        for arg in &sig.inputs {
            match arg {
                FnArg::Receiver(r) => receiver = Some(r.self_token.span),
                FnArg::Typed(t) => {
                    let mut bindings = Vec::new();
                    collect_bindings(&t.pat, &mut bindings);
                    params.push(Param {
                        pat: (*t.pat).clone(),
                        ty: (*t.ty).clone(),
                        bindings,
                        type_name: type_name(&t.ty),
                    });
                }
            }
        }
        let output = match &sig.output {
            ReturnType::Default => Output {
                ty: None,
                kind: OutputKind::Plain,
            },
            ReturnType::Type(_, ty) => Output {
                kind: OutputKind::of(ty),
                ty: Some((**ty).clone()),
            },
        };
        Ok(AsyncFn {
            attrs,
            vis,
            sig,
            body,
            receiver,
            params,
            output,
        })
    }
}

impl AsyncFn {
    /// Parses an item; errors when it is not a `fn` with a body.
    pub(crate) fn parse_item(item: TokenStream) -> syn::Result<Self> {
        syn::parse2(item)
    }

    /// Records an error on `fn` unless the fn is `async`.
    /// `attr` is the attribute's name, as in `cacheable`.
    pub(crate) fn require_async(&self, cx: &Ctxt, attr: &str) {
        if self.sig.asyncness.is_none() {
            cx.error_at(
                self.sig.fn_token.span,
                format_args!("`#[{attr}]` can only be applied to an `async fn`"),
            );
        }
    }

    /// The fn's name.
    pub(crate) fn ident(&self) -> &Ident {
        &self.sig.ident
    }

    /// Whether the fn has a `self` receiver.
    pub(crate) fn has_receiver(&self) -> bool {
        self.receiver.is_some()
    }

    /// Every identifier bound by a parameter, with its parameter.
    pub(crate) fn bindings(&self) -> impl Iterator<Item = (&Ident, &Param)> {
        self.params
            .iter()
            .flat_map(|p| p.bindings.iter().map(move |b| (b, p)))
    }

    /// The parameter that binds `name`.
    pub(crate) fn binding(&self, name: &str) -> Option<(&Ident, &Param)> {
        self.bindings().find(|(b, _)| *b == name)
    }

    /// The names of all bindings, for "expected one of" messages.
    pub(crate) fn binding_names(&self) -> Vec<String> {
        self.bindings().map(|(b, _)| b.to_string()).collect()
    }

    /// The return type as written, or `()` when there is none; for use as a
    /// type argument. A type containing `impl Trait` becomes `_`.
    pub(crate) fn output_type(&self) -> TokenStream {
        match &self.output.ty {
            None => quote::quote!(()),
            Some(ty) if contains_impl_trait(ty) => quote::quote!(_),
            Some(ty) => ty.to_token_stream(),
        }
    }
}

impl AsyncFn {
    /// The cached value's type as written (`T` in `Result<Option<T>, E>`),
    /// when it can be named in the body: not for `()` written as no return
    /// type, nor for a type containing `impl Trait`.
    pub(crate) fn nameable_value_type(&self) -> Option<&Type> {
        self.output
            .value_type()
            .filter(|ty| !contains_impl_trait(ty))
    }
}

/// Reassembles the item (used when only the body is replaced).
impl ToTokens for AsyncFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attr in &self.attrs {
            attr.to_tokens(tokens);
        }
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        self.body.to_tokens(tokens);
    }
}

/// The identifiers a pattern binds, in source order.
pub(crate) fn collect_bindings(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                collect_bindings(sub, out);
            }
        }
        Pat::Paren(p) => collect_bindings(&p.pat, out),
        Pat::Reference(p) => collect_bindings(&p.pat, out),
        Pat::Type(p) => collect_bindings(&p.pat, out),
        Pat::Tuple(p) => p.elems.iter().for_each(|e| collect_bindings(e, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| collect_bindings(e, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| collect_bindings(e, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| collect_bindings(&f.pat, out)),
        // Every alternative binds the same names.
        Pat::Or(p) => {
            if let Some(first) = p.cases.first() {
                collect_bindings(first, out);
            }
        }
        _ => {}
    }
}

/// The last path segment of a type (through references and parentheses).
fn type_name(ty: &Type) -> Option<Ident> {
    match peel(ty) {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.clone()),
        Type::Reference(r) => type_name(&r.elem),
        _ => None,
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    ty.to_token_stream()
        .into_iter()
        .any(|t| contains_impl_token(&t))
}

fn contains_impl_token(t: &proc_macro2::TokenTree) -> bool {
    match t {
        proc_macro2::TokenTree::Ident(i) => i == "impl",
        proc_macro2::TokenTree::Group(g) => g.stream().into_iter().any(|t| contains_impl_token(&t)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> AsyncFn {
        AsyncFn::parse_item(tokens).unwrap()
    }

    fn kind(ty: TokenStream) -> OutputKind {
        OutputKind::of(&syn::parse2(ty).unwrap())
    }

    #[test]
    fn output_kinds_nest() {
        use OutputKind::{Json, Option, Plain, Result};
        assert_eq!(kind(quote!(u64)), Plain);
        assert_eq!(kind(quote!(Result<u64, E>)), Result(Box::new(Plain)));
        assert_eq!(kind(quote!(std::io::Result<u64>)), Result(Box::new(Plain)));
        assert_eq!(kind(quote!(Option<Vec<u8>>)), Option(Box::new(Plain)));
        assert_eq!(
            kind(quote!(::core::result::Result<Json<User>, AppError>)),
            Result(Box::new(Json(Box::new(Plain))))
        );
        assert_eq!(
            kind(quote!(Option<Option<u8>>)),
            Option(Box::new(Option(Box::new(Plain))))
        );
        assert_eq!(kind(quote!((u8, u8))), Plain);
        assert_eq!(kind(quote!(Result)), Plain);
    }

    #[test]
    fn parses_method_with_patterns() {
        let f = parse(quote! {
            /// Docs.
            #[inline]
            pub(crate) async fn get<T: Clone>(&self, Path((a, b)): Path<(u64, u64)>, Json(form): Json<Login>, _: u8, mut n: u32) -> Result<Json<T>, E> where T: Send { body() }
        });
        assert_eq!(f.attrs.len(), 2);
        assert!(f.has_receiver());
        assert_eq!(f.binding_names(), ["a", "b", "form", "n"]);
        assert!(!f.params[0].is_simple());
        assert!(f.params[3].is_simple());
        assert_eq!(f.params[1].type_name.as_ref().unwrap(), "Json");
        assert!(f.output.kind.is_result());
        assert_eq!(
            f.binding("form").unwrap().1.type_name.as_ref().unwrap(),
            "Json"
        );
        assert!(f.binding("self").is_none());
        assert_eq!(f.output_type().to_string(), "Result < Json < T > , E >");
        assert_eq!(
            f.output.value_type().unwrap().to_token_stream().to_string(),
            "T"
        );
    }

    #[test]
    fn state_extractor_is_recognised() {
        let f = parse(quote!(
            async fn h(
                State(s): State<App>,
                axum::extract::State(t): axum::extract::State<A>,
                u: Stat,
            ) {
            }
        ));
        let flags: Vec<bool> = f.params.iter().map(Param::is_state_extractor).collect();
        assert_eq!(flags, [true, true, false]);
        assert_eq!(f.output_type().to_string(), "()");
    }

    #[test]
    fn value_extractors_carry_their_inner_type() {
        let f = parse(quote!(
            async fn h(
                q: Query<Filter>,
                p: axum::extract::Path<(u64, String)>,
                j: &Json<Login>,
                mut f: Form<Vec<u8>>,
                e: Extension<User>,
                Query(x): Query<Filter>,
                s: State<App>,
                c: ConnectInfo<SocketAddr>,
                path: &std::path::Path,
                t: Json,
                m: HeaderMap,
            ) {
            }
        ));
        let carried: Vec<Option<(String, String)>> = f
            .params
            .iter()
            .map(|p| {
                p.carrier().map(|c| {
                    (
                        c.pattern.to_token_stream().to_string(),
                        c.inner.to_token_stream().to_string(),
                    )
                })
            })
            .collect();
        let some = |p: &str, t: &str| Some((p.to_owned(), t.to_owned()));
        assert_eq!(
            carried,
            [
                some("Query", "Filter"),
                some("axum :: extract :: Path", "(u64 , String)"),
                some("Json", "Login"),
                some("Form", "Vec < u8 >"),
                some("Extension", "User"),
                None,
                None,
                None,
                None,
                None,
                None,
            ]
        );
    }

    #[test]
    fn not_async_is_reported_on_fn() {
        let f = parse(quote!(
            fn f() {}
        ));
        let cx = Ctxt::new();
        f.require_async(&cx, "cacheable");
        let err = cx.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`#[cacheable]` can only be applied to an `async fn`"
        );
    }

    #[test]
    fn body_is_required() {
        let err = AsyncFn::parse_item(quote!(
            async fn f();
        ))
        .err()
        .unwrap();
        assert_eq!(err.to_string(), "expected a function with a body");
        assert!(
            AsyncFn::parse_item(quote!(
                struct S;
            ))
            .is_err()
        );
    }

    #[test]
    fn impl_trait_output_is_inferred() {
        let f = parse(quote!(
            async fn f() -> Option<impl Display> {}
        ));
        assert_eq!(f.output_type().to_string(), "_");
    }

    #[test]
    fn round_trips_tokens() {
        let src = quote!(
            #[doc = "x"]
            pub async fn f<'a>(x: &'a str) -> u8
            where
                'a: 'a,
            {
                1
            }
        );
        assert_eq!(
            parse(src.clone()).to_token_stream().to_string(),
            src.to_string()
        );
    }
}
