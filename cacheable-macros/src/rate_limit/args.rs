//! The arguments of `#[rate_limit(..)]`, parsed with [`syn::meta::parser`]
//! and validated at expansion (values spanned on their literal). Every
//! problem is recorded in the [`Ctxt`] and parsing goes on.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser as _;
use syn::{Expr, Lit, LitInt, LitStr, Token};

use crate::args::skip_value;
use crate::ctxt::Ctxt;
use crate::input::AsyncFn;
use crate::template::Template;

/// Every argument `#[rate_limit]` accepts, in the order of the docs.
pub(crate) const ACCEPTED: &[&str] = &[
    "points",
    "duration",
    "by",
    "key",
    "roles",
    "algorithm",
    "cost",
    "name",
    "on_error",
    "cache",
    "crate",
];

/// Whose budget a call spends (`by = ".."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    User,
    Ip,
    Tenant,
    Global,
}

/// `algorithm = ".."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Gcra,
    SlidingWindow,
    FixedWindow,
}

/// `on_error = ".."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    Local,
    Allow,
    Deny,
}

/// A value with the span of its key.
pub(crate) struct Arg<T> {
    pub(crate) key: Span,
    pub(crate) value: T,
}

/// A number with the span of its literal.
#[derive(Clone, Copy)]
pub(crate) struct Num {
    pub(crate) value: u64,
    pub(crate) span: Span,
}

/// The parsed arguments.
#[derive(Default)]
pub(crate) struct RateLimitArgs {
    /// `points` was written (possibly with an invalid value).
    pub(crate) points_written: bool,
    pub(crate) points: Option<Arg<Num>>,
    pub(crate) duration_ms: Option<Arg<Num>>,
    pub(crate) by: Option<Arg<By>>,
    pub(crate) key: Option<Arg<Template>>,
    pub(crate) roles: Option<Arg<Vec<(LitStr, Num)>>>,
    pub(crate) algorithm: Option<Arg<Algorithm>>,
    pub(crate) cost: Option<Arg<Num>>,
    pub(crate) name: Option<Arg<LitStr>>,
    pub(crate) on_error: Option<Arg<OnError>>,
    pub(crate) cache: Option<Arg<Expr>>,
    pub(crate) krate: Option<Arg<syn::Path>>,
}

fn set_once<T>(slot: &mut Option<Arg<T>>, meta: &ParseNestedMeta<'_>, value: T) -> syn::Result<()> {
    let key = meta.path.segments[0].ident.clone();
    if slot.is_some() {
        return Err(syn::Error::new(
            key.span(),
            format_args!("duplicate `{key}` argument"),
        ));
    }
    *slot = Some(Arg {
        key: key.span(),
        value,
    });
    Ok(())
}

/// A positive integer that fits `u32`, spanned on the literal.
fn parse_count(lit: &LitInt, what: &str) -> syn::Result<Num> {
    let err = || {
        syn::Error::new(
            lit.span(),
            format_args!("{what} must be an integer from 1 to {}", u32::MAX),
        )
    };
    let value: u64 = lit.base10_parse().map_err(|_| err())?;
    if value == 0 || value > u64::from(u32::MAX) {
        return Err(err());
    }
    Ok(Num {
        value,
        span: lit.span(),
    })
}

fn parse_int_value(meta: &ParseNestedMeta<'_>, what: &str) -> syn::Result<Num> {
    let value = meta.value()?;
    match value.parse::<Lit>()? {
        Lit::Int(lit) => parse_count(&lit, what),
        other => Err(syn::Error::new(
            other.span(),
            format_args!("{what} must be an integer from 1 to {}", u32::MAX),
        )),
    }
}

/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"` in milliseconds.
pub(crate) fn duration_ms(s: &str) -> Option<u64> {
    let (digits, factor) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else {
        let factor = match s.as_bytes().last()? {
            b's' => 1_000,
            b'm' => 60_000,
            b'h' => 3_600_000,
            b'd' => 86_400_000,
            _ => return None,
        };
        (&s[..s.len() - 1], factor)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// `= 60` (seconds) or `= "1m"`; zero is rejected.
fn parse_duration(meta: &ParseNestedMeta<'_>) -> syn::Result<Num> {
    let value = meta.value()?;
    let msg = "`duration` must be a positive number of seconds (`60`) or a string with a unit \
               (`\"500ms\"`, `\"30s\"`, `\"5m\"`, `\"2h\"`, `\"1d\"`)";
    let lit: Lit = value.parse()?;
    let ms = match &lit {
        Lit::Int(i) => i
            .base10_parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1000)),
        Lit::Str(s) => duration_ms(&s.value()),
        _ => None,
    };
    match ms {
        Some(value) if value > 0 => Ok(Num {
            value,
            span: lit.span(),
        }),
        _ => Err(syn::Error::new(lit.span(), msg)),
    }
}

/// `= "a"` where `a` is one of `choices`, spanned on the literal.
fn parse_choice<T: Copy>(
    meta: &ParseNestedMeta<'_>,
    what: &str,
    choices: &[(&str, T)],
) -> syn::Result<T> {
    let lit: LitStr = meta.value()?.parse()?;
    let v = lit.value();
    choices
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let list = choices
                .iter()
                .map(|(n, _)| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            syn::Error::new(
                lit.span(),
                format_args!("unknown {what} `{v}`; expected one of {list}"),
            )
        })
}

/// `roles(admin = 1000, free = 10)`.
fn parse_roles(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<(LitStr, Num)>> {
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error("expected `roles(name = points, ..)`"));
    }
    let mut roles: Vec<(LitStr, Num)> = Vec::new();
    let mut written = 0usize;
    let mut seen: Vec<String> = Vec::new();
    meta.parse_nested_meta(|role| {
        written += 1;
        let Some(ident) = role.path.get_ident().cloned() else {
            cx.error_spanned_by(&role.path, "a role is a plain name, as in `admin = 1000`");
            return skip_value(role.input);
        };
        let name = ident.to_string();
        if !role.input.peek(Token![=]) {
            cx.error_spanned_by(
                &ident,
                format_args!("role `{name}` needs its points, as in `{name} = 100`"),
            );
            return skip_value(role.input);
        }
        if seen.contains(&name) {
            cx.error_spanned_by(&ident, format_args!("duplicate role `{name}`"));
        }
        seen.push(name.clone());
        match parse_int_value(&role, &format!("the points of role `{name}`")) {
            Ok(points) => {
                if !roles.iter().any(|(n, _)| n.value() == name) {
                    roles.push((LitStr::new(&name, ident.span()), points));
                }
            }
            Err(e) => {
                cx.push(e);
                skip_value(role.input)?;
            }
        }
        Ok(())
    })?;
    if written == 0 {
        cx.error_spanned_by(&meta.path, "`roles(..)` lists no role");
    }
    Ok(roles)
}

impl RateLimitArgs {
    /// Parses the attribute's arguments, recording every problem in `cx`.
    pub(crate) fn parse(cx: &Ctxt, attr: TokenStream) -> Self {
        let mut args = RateLimitArgs::default();
        let parser = syn::meta::parser(|meta| {
            let Some(key) = meta.path.get_ident().map(ToString::to_string) else {
                cx.push(unknown(&meta));
                return skip_value(meta.input);
            };
            let result = (|| -> syn::Result<()> {
                match key.as_str() {
                    "points" => {
                        args.points_written = true;
                        let v = parse_int_value(&meta, "`points`")?;
                        set_once(&mut args.points, &meta, v)
                    }
                    "duration" => {
                        let v = parse_duration(&meta)?;
                        set_once(&mut args.duration_ms, &meta, v)
                    }
                    "by" => {
                        let v = parse_choice(
                            &meta,
                            "`by`",
                            &[
                                ("user", By::User),
                                ("ip", By::Ip),
                                ("tenant", By::Tenant),
                                ("global", By::Global),
                            ],
                        )?;
                        set_once(&mut args.by, &meta, v)
                    }
                    "key" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        let t = Template::parse(lit)?;
                        set_once(&mut args.key, &meta, t)
                    }
                    "roles" => {
                        let v = parse_roles(cx, &meta)?;
                        set_once(&mut args.roles, &meta, v)
                    }
                    "algorithm" => {
                        let v = parse_choice(
                            &meta,
                            "algorithm",
                            &[
                                ("gcra", Algorithm::Gcra),
                                ("sliding_window", Algorithm::SlidingWindow),
                                ("fixed_window", Algorithm::FixedWindow),
                            ],
                        )?;
                        set_once(&mut args.algorithm, &meta, v)
                    }
                    "cost" => {
                        let v = parse_int_value(&meta, "`cost`")?;
                        set_once(&mut args.cost, &meta, v)
                    }
                    "name" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        if lit.value().is_empty() {
                            return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                        }
                        set_once(&mut args.name, &meta, lit)
                    }
                    "on_error" => {
                        let v = parse_choice(
                            &meta,
                            "`on_error`",
                            &[
                                ("local", OnError::Local),
                                ("allow", OnError::Allow),
                                ("deny", OnError::Deny),
                            ],
                        )?;
                        set_once(&mut args.on_error, &meta, v)
                    }
                    "cache" => {
                        let e: Expr = meta.value()?.parse()?;
                        set_once(&mut args.cache, &meta, e)
                    }
                    "crate" => {
                        let path = crate::krate::Krate::parse(&meta)?;
                        set_once(&mut args.krate, &meta, path)
                    }
                    _ => Err(unknown(&meta)),
                }
            })();
            if let Err(e) = result {
                cx.push(e);
                skip_value(meta.input)?;
            }
            Ok(())
        });
        if let Err(e) = parser.parse2(attr) {
            cx.push(e);
        }
        args
    }

    /// Checks what needs the function: required arguments, template
    /// placeholders, exclusive arguments, cost against points.
    pub(crate) fn check(&self, cx: &Ctxt, input: &AsyncFn) {
        let Some(points) = &self.points else {
            if self.points_written {
                return;
            }
            cx.error_at(
                Span::call_site(),
                "missing `points` argument: `#[rate_limit(points = 10, duration = 60)]`",
            );
            return;
        };
        if let (Some(key), Some(_)) = (&self.key, &self.by) {
            cx.error_at(
                key.key,
                "`key` and `by` are exclusive: `key = \"..\"` names the budget itself",
            );
        }
        if let Some(key) = &self.key {
            key.value.check(cx, input);
        }
        if let Some(cost) = &self.cost {
            let max = self
                .roles
                .iter()
                .flat_map(|r| r.value.iter().map(|(_, n)| n.value))
                .chain([points.value.value])
                .max()
                .unwrap_or(0);
            if cost.value.value > max {
                cx.error_at(
                    cost.value.span,
                    format_args!(
                        "`cost = {}` exceeds every budget (at most {max} points): every call would be refused",
                        cost.value.value
                    ),
                );
            }
        }
    }
}

fn unknown(meta: &ParseNestedMeta<'_>) -> syn::Error {
    crate::args::unknown(meta, "rate_limit", ACCEPTED)
}
