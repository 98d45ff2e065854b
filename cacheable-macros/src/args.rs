//! The arguments of `#[cacheable(..)]` and `#[cache_evict(..)]`: one struct
//! per attribute, parsed with [`syn::meta::parser`]. Every problem is
//! recorded in the [`Ctxt`] and parsing goes on, so one compile reports all
//! of them.
//!
//! Over 400 lines: one parser per attribute with a spanned error for each
//! misuse, plus its unit tests (about 150, at the end); left in place while
//! the macro arguments are being reworked.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt as _;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser as _};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitInt, LitStr, Token};

use crate::ctxt::Ctxt;
use crate::input::AsyncFn;
use crate::krate::Krate;
use crate::template::Template;

/// A value given once, with the span of its key and its position.
pub(crate) struct Arg<T> {
    /// The span of the argument's key (`ttl` in `ttl = 60`).
    pub(crate) key: Span,
    /// The position among the attribute's arguments.
    pub(crate) index: usize,
    /// The value.
    pub(crate) value: T,
}

/// The set-once helper: stores `value` in `slot`, or errors on the key of a
/// repeated argument.
fn set_once<T>(
    slot: &mut Option<Arg<T>>,
    meta: &ParseNestedMeta<'_>,
    index: usize,
    value: T,
) -> syn::Result<()> {
    let key = meta.path.segments[0].ident.clone();
    if slot.is_some() {
        return Err(syn::Error::new(
            key.span(),
            format_args!("duplicate `{key}` argument"),
        ));
    }
    *slot = Some(Arg {
        key: key.span(),
        index,
        value,
    });
    Ok(())
}

/// Seconds given as an integer (`60`) or a string with a unit (`"5m"`).
#[derive(Clone, Copy)]
pub(crate) struct Secs {
    /// The number of seconds.
    pub(crate) secs: u64,
    /// The literal.
    pub(crate) span: Span,
}

/// Parses `= 60` or `= "5m"` (units `s`, `m`, `h`, `d`). `what` names the
/// argument in errors. Zero is rejected, spanned on the literal.
pub(crate) fn parse_secs(meta: &ParseNestedMeta<'_>, what: &str) -> syn::Result<Secs> {
    let value = meta.value()?;
    let expected = || {
        format!(
            "`{what}` expects seconds as an integer, or a string with a unit: \"30s\", \"5m\", \"2h\", \"1d\""
        )
    };
    let (secs, span) = if value.peek(LitInt) {
        let lit: LitInt = value.parse()?;
        let secs = lit
            .base10_parse::<u64>()
            .map_err(|_| syn::Error::new(lit.span(), expected()))?;
        (secs, lit.span())
    } else if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        let secs =
            duration_secs(&lit.value()).ok_or_else(|| syn::Error::new(lit.span(), expected()))?;
        (secs, lit.span())
    } else {
        return Err(value.error(expected()));
    };
    if secs == 0 {
        return Err(syn::Error::new(
            span,
            format_args!("`{what}` must be greater than zero"),
        ));
    }
    Ok(Secs { secs, span })
}

/// `"30s"`, `"5m"`, `"2h"`, `"1d"` in seconds.
pub(crate) fn duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// Errors on `flag = ..` or `flag(..)` for an argument that takes no value.
fn flag(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        let key = &meta.path.segments[0].ident;
        return Err(meta.error(format_args!("`{key}` takes no value")));
    }
    Ok(())
}

/// Skips the value of an argument that was rejected, up to the next `,`.
pub(crate) fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

/// The error for an argument `attr` does not take, listing the ones it does.
pub(crate) fn unknown(meta: &ParseNestedMeta<'_>, attr: &str, accepted: &[&str]) -> syn::Error {
    let key = meta
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    let list = accepted
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    syn::Error::new_spanned(
        &meta.path,
        format_args!("unknown `{attr}` argument `{key}`; expected one of {list}"),
    )
}

/// `= ["a", "b:{x}"]`: each string parsed as a template.
fn parse_tags(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Template>> {
    let value = meta.value()?;
    let content;
    syn::bracketed!(content in value);
    let lits = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(lits
        .into_iter()
        .filter_map(|lit| cx.ok(Template::parse(lit)))
        .collect())
}

/// `(a, b)`: the names of bindings.
fn parse_skip(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Ident>> {
    let content;
    syn::parenthesized!(content in meta.input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
    for name in &names {
        if name == "self" {
            return Err(syn::Error::new(
                name.span(),
                "`self` is always left out of the key; remove it from `skip`",
            ));
        }
    }
    Ok(names.into_iter().collect())
}

fn parse_name(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let lit: LitStr = meta.value()?.parse()?;
    if lit.value().is_empty() {
        return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
    }
    Ok(lit)
}

/// Runs `logic` for each argument; syntax errors are recorded in `cx`.
fn parse_args(
    cx: &Ctxt,
    attr: TokenStream,
    mut logic: impl FnMut(&ParseNestedMeta<'_>, &str, usize) -> syn::Result<bool>,
    name: &str,
    accepted: &[&str],
) {
    let mut index = 0;
    let parser = syn::meta::parser(|meta| {
        index += 1;
        let key = meta.path.get_ident().map(Ident::to_string);
        let known = match key.as_deref() {
            Some(key) => match logic(&meta, key, index) {
                Ok(known) => known,
                Err(e) => {
                    cx.push(e);
                    skip_value(meta.input)?;
                    true
                }
            },
            None => false,
        };
        if !known {
            cx.push(unknown(&meta, name, accepted));
            skip_value(meta.input)?;
        }
        Ok(())
    });
    cx.ok(parser.parse2(attr));
}

/// Whether `expr` is exactly the binding `name` (as in `cache = cache`).
fn is_binding(expr: &Expr, name: &Ident) -> bool {
    match expr {
        Expr::Path(p) => p.qself.is_none() && p.path.is_ident(name),
        Expr::Reference(r) => is_binding(&r.expr, name),
        Expr::Paren(p) => is_binding(&p.expr, name),
        _ => false,
    }
}

/// Checks that every name in `skip` is a parameter binding.
fn check_skip(cx: &Ctxt, skip: Option<&Arg<Vec<Ident>>>, input: &AsyncFn) {
    for name in skip.map(|s| s.value.as_slice()).unwrap_or_default() {
        if input.binding(&name.to_string()).is_none() {
            cx.error_at(
                name.span(),
                format_args!("`skip({name})` names no parameter of `{}`", input.ident()),
            );
        }
    }
}

/// The arguments of `#[cacheable(..)]`.
#[derive(Default)]
pub(crate) struct CacheableArgs {
    pub(crate) ttl: Option<Arg<Secs>>,
    pub(crate) policy: Option<Arg<LitStr>>,
    pub(crate) tags: Option<Arg<Vec<Template>>>,
    pub(crate) key: Option<Arg<Template>>,
    pub(crate) skip: Option<Arg<Vec<Ident>>>,
    pub(crate) name: Option<Arg<LitStr>>,
    pub(crate) version: Option<Arg<u32>>,
    pub(crate) global: Option<Arg<()>>,
    pub(crate) stale: Option<Arg<Secs>>,
    pub(crate) cache: Option<Arg<Expr>>,
    pub(crate) cache_none: Option<Arg<()>>,
    /// `local = false`: keep the call site out of the local tier.
    pub(crate) local: Option<Arg<bool>>,
    pub(crate) krate: Option<Arg<syn::Path>>,
}

impl CacheableArgs {
    /// Every accepted key, in the order of the docs.
    pub(crate) const KEYS: &'static [&'static str] = &[
        "ttl",
        "policy",
        "tags",
        "key",
        "skip",
        "name",
        "version",
        "global",
        "stale",
        "cache",
        "cache_none",
        "local",
        "crate",
    ];

    /// Parses the attribute's arguments; problems go to `cx`.
    pub(crate) fn parse(cx: &Ctxt, attr: TokenStream) -> Self {
        let mut args = CacheableArgs::default();
        parse_args(
            cx,
            attr,
            |meta, key, i| {
                match key {
                    "ttl" => set_once(&mut args.ttl, meta, i, parse_secs(meta, "ttl")?)?,
                    "policy" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        if lit.value().is_empty() {
                            return Err(syn::Error::new(lit.span(), "`policy` must not be empty"));
                        }
                        set_once(&mut args.policy, meta, i, lit)?;
                    }
                    "tags" => set_once(&mut args.tags, meta, i, parse_tags(cx, meta)?)?,
                    "key" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        set_once(&mut args.key, meta, i, Template::parse(lit)?)?;
                    }
                    "skip" => set_once(&mut args.skip, meta, i, parse_skip(meta)?)?,
                    "name" => set_once(&mut args.name, meta, i, parse_name(meta)?)?,
                    "version" => {
                        let lit: LitInt = meta.value()?.parse()?;
                        let v = lit.base10_parse::<u32>()?;
                        set_once(&mut args.version, meta, i, v)?;
                    }
                    "global" => {
                        flag(meta)?;
                        set_once(&mut args.global, meta, i, ())?;
                    }
                    "stale" => set_once(&mut args.stale, meta, i, parse_secs(meta, "stale")?)?,
                    "cache" => set_once(&mut args.cache, meta, i, meta.value()?.parse()?)?,
                    "cache_none" => {
                        flag(meta)?;
                        set_once(&mut args.cache_none, meta, i, ())?;
                    }
                    "local" => {
                        let lit: syn::LitBool = meta.value()?.parse()?;
                        set_once(&mut args.local, meta, i, lit.value)?;
                    }
                    "crate" => set_once(&mut args.krate, meta, i, Krate::parse(meta)?)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "cacheable",
            Self::KEYS,
        );
        if let (Some(ttl), Some(policy)) = (&args.ttl, &args.policy) {
            let later = if ttl.index > policy.index {
                ttl.key
            } else {
                policy.key
            };
            cx.error_at(
                later,
                "`ttl` and `policy` cannot be used together; the policy sets the TTL",
            );
        }
        args
    }

    /// Checks the arguments against the function: `skip` and template
    /// placeholders must name parameters.
    pub(crate) fn check(&self, cx: &Ctxt, input: &AsyncFn) {
        check_skip(cx, self.skip.as_ref(), input);
        for t in self.tags.iter().flat_map(|t| &t.value) {
            t.check_tag(cx, input);
        }
        if let Some(key) = &self.key {
            key.value.check(cx, input);
        }
    }

    /// Where generated code finds the runtime (`crate = ".."`).
    pub(crate) fn krate(&self) -> Krate {
        Krate::new(self.krate.as_ref().map(|a| a.value.clone()))
    }

    /// Whether binding `name` is left out of the default key: named in
    /// `skip(..)`, or the parameter named by `cache = <param>`.
    pub(crate) fn skips(&self, name: &Ident) -> bool {
        self.skip.as_ref().is_some_and(|s| s.value.contains(name))
            || self
                .cache
                .as_ref()
                .is_some_and(|c| is_binding(&c.value, name))
    }
}

/// The arguments of `#[cache_evict(..)]`.
#[derive(Default)]
pub(crate) struct EvictArgs {
    pub(crate) tags: Option<Arg<Vec<Template>>>,
    pub(crate) skip: Option<Arg<Vec<Ident>>>,
    pub(crate) all_tenants: Option<Arg<()>>,
    pub(crate) cache: Option<Arg<Expr>>,
    pub(crate) strict: Option<Arg<()>>,
    pub(crate) krate: Option<Arg<syn::Path>>,
}

impl EvictArgs {
    /// Every accepted key.
    pub(crate) const KEYS: &'static [&'static str] =
        &["tags", "skip", "all_tenants", "cache", "strict", "crate"];

    /// Parses the attribute's arguments; problems go to `cx`.
    pub(crate) fn parse(cx: &Ctxt, attr: TokenStream) -> Self {
        let mut args = EvictArgs::default();
        let empty = attr.is_empty();
        parse_args(
            cx,
            attr,
            |meta, key, i| {
                match key {
                    "tags" => set_once(&mut args.tags, meta, i, parse_tags(cx, meta)?)?,
                    "skip" => set_once(&mut args.skip, meta, i, parse_skip(meta)?)?,
                    "all_tenants" => {
                        flag(meta)?;
                        set_once(&mut args.all_tenants, meta, i, ())?;
                    }
                    "cache" => set_once(&mut args.cache, meta, i, meta.value()?.parse()?)?,
                    "strict" => {
                        flag(meta)?;
                        set_once(&mut args.strict, meta, i, ())?;
                    }
                    "crate" => set_once(&mut args.krate, meta, i, Krate::parse(meta)?)?,
                    _ => return Ok(false),
                }
                Ok(true)
            },
            "cache_evict",
            Self::KEYS,
        );
        if args.tags.as_ref().is_none_or(|t| t.value.is_empty()) && (empty || !cx.has_errors()) {
            let span = args.tags.as_ref().map_or_else(Span::call_site, |t| t.key);
            cx.error_at(
                span,
                "`#[cache_evict]` needs the tags to invalidate: `tags = [\"..\"]`",
            );
        }
        args
    }

    /// Where generated code finds the runtime (`crate = ".."`).
    pub(crate) fn krate(&self) -> Krate {
        Krate::new(self.krate.as_ref().map(|a| a.value.clone()))
    }

    /// Checks the arguments against the function.
    pub(crate) fn check(&self, cx: &Ctxt, input: &AsyncFn) {
        check_skip(cx, self.skip.as_ref(), input);
        for t in self.tags.iter().flat_map(|t| &t.value) {
            t.check_tag(cx, input);
        }
        if let Some(strict) = &self.strict
            && !input.output.kind.is_result()
        {
            cx.error_at(
                strict.key,
                format_args!(
                    "`strict` returns a failed invalidation as the fn's error, so `{}` must return \
                     `Result<T, E>` with `E: From<cacheable::CacheError>`; remove `strict` or return a `Result`",
                    input.ident()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(cx: Ctxt) -> Vec<String> {
        cx.check()
            .err()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    fn cacheable(attr: TokenStream) -> (CacheableArgs, Vec<String>) {
        let cx = Ctxt::new();
        let args = CacheableArgs::parse(&cx, attr);
        (args, errors(cx))
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("30s"), Some(30));
        assert_eq!(duration_secs("5m"), Some(300));
        assert_eq!(duration_secs("2h"), Some(7200));
        assert_eq!(duration_secs("1d"), Some(86_400));
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "-5m",
            "1.5h",
            "m5",
            "99999999999999999999d",
        ] {
            assert_eq!(duration_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_every_cacheable_argument() {
        let (a, errs) = cacheable(quote!(
            ttl = "5m",
            tags = ["users", "user:{id}"],
            key = "{id}",
            skip(db, pool),
            name = "users.get",
            version = 2,
            global,
            stale = 30,
            cache = self.cache,
            cache_none
        ));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(a.ttl.unwrap().value.secs, 300);
        assert_eq!(a.tags.unwrap().value.len(), 2);
        assert!(a.key.is_some());
        assert_eq!(a.skip.as_ref().unwrap().value.len(), 2);
        assert_eq!(a.name.unwrap().value.value(), "users.get");
        assert_eq!(a.version.unwrap().value, 2);
        assert!(a.global.is_some() && a.cache_none.is_some());
        assert_eq!(a.stale.unwrap().value.secs, 30);
        assert!(a.cache.is_some());
        let (a, errs) = cacheable(quote!(policy = "profile"));
        assert!(errs.is_empty());
        assert_eq!(a.policy.unwrap().value.value(), "profile");
        let (_, errs) = cacheable(TokenStream::new());
        assert!(errs.is_empty());
    }

    #[test]
    fn reports_every_error_at_once() {
        let (_, errs) = cacheable(quote!(
            tll = 5,
            ttl = 0,
            ttl = 10,
            global = true,
            version = "x",
            stale = "soon"
        ));
        assert_eq!(
            errs,
            [
                "unknown `cacheable` argument `tll`; expected one of `ttl`, `policy`, `tags`, `key`, `skip`, `name`, `version`, `global`, `stale`, `cache`, `cache_none`, `local`, `crate`",
                "`ttl` must be greater than zero",
                "`global` takes no value",
                "expected integer literal",
                "`stale` expects seconds as an integer, or a string with a unit: \"30s\", \"5m\", \"2h\", \"1d\"",
            ]
        );
        let (_, errs) = cacheable(quote!(ttl = 1, ttl = 2));
        assert_eq!(errs, ["duplicate `ttl` argument"]);
        let (_, errs) = cacheable(quote!(policy = "p", ttl = 2));
        assert_eq!(
            errs,
            ["`ttl` and `policy` cannot be used together; the policy sets the TTL"]
        );
        let (_, errs) = cacheable(quote!(skip(self)));
        assert_eq!(
            errs,
            ["`self` is always left out of the key; remove it from `skip`"]
        );
        let (_, errs) = cacheable(quote!(tags = ["{"], name = ""));
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn checks_against_the_function() {
        let f = AsyncFn::parse_item(quote!(
            async fn f(db: &Db, id: u64) {}
        ))
        .unwrap();
        let cx = Ctxt::new();
        let a = CacheableArgs::parse(&cx, quote!(skip(db, pool), tags = ["{idd}"], key = "{id}"));
        a.check(&cx, &f);
        let errs = errors(cx);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0], "`skip(pool)` names no parameter of `f`");
        assert!(a.skips(&Ident::new("db", Span::call_site())));
        assert!(!a.skips(&Ident::new("id", Span::call_site())));
        let a = CacheableArgs::parse(&Ctxt::new(), quote!(cache = c));
        assert!(a.skips(&Ident::new("c", Span::call_site())));
        let a = CacheableArgs::parse(&Ctxt::new(), quote!(cache = self.c));
        assert!(!a.skips(&Ident::new("c", Span::call_site())));
    }

    #[test]
    fn evict_arguments() {
        let cx = Ctxt::new();
        let a = EvictArgs::parse(
            &cx,
            quote!(tags = ["user:{id}"], skip(db), all_tenants, cache = c),
        );
        assert!(errors(cx).is_empty());
        assert!(a.all_tenants.is_some() && a.cache.is_some());
        let cx = Ctxt::new();
        EvictArgs::parse(&cx, TokenStream::new());
        assert_eq!(
            errors(cx),
            ["`#[cache_evict]` needs the tags to invalidate: `tags = [\"..\"]`"]
        );
        let cx = Ctxt::new();
        EvictArgs::parse(&cx, quote!(ttl = 5));
        assert_eq!(
            errors(cx),
            [
                "unknown `cache_evict` argument `ttl`; expected one of `tags`, `skip`, `all_tenants`, `cache`, `strict`, `crate`"
            ]
        );
    }
}
