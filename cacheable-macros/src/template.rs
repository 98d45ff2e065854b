//! String templates of the attributes (`tags = ["user:{id}"]`,
//! `key = "{id}:{lang}"`): literal text with `{ident}`, `{ident.field}` and
//! `{self.field}` placeholders, rendered with `Display`; `{{` and `}}` are
//! literal braces.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote_spanned};
use syn::LitStr;

use crate::ctxt::Ctxt;
use crate::input::AsyncFn;

/// A parsed template.
pub(crate) struct Template {
    /// The literal, for spans.
    pub(crate) lit: LitStr,
    /// Text and placeholders, in order.
    pub(crate) parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Literal text (braces already unescaped).
    Text(String),
    /// `{root.field.field}`.
    Arg(Placeholder),
}

/// `{root}`, `{root.a.b}`; `root` is a parameter binding or `self`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// The binding (or `self`).
    pub(crate) root: String,
    /// Field accesses, each an identifier or a tuple index.
    pub(crate) fields: Vec<String>,
}

impl std::fmt::Display for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        f.write_str(&self.root)?;
        for field in &self.fields {
            write!(f, ".{field}")?;
        }
        f.write_str("}")
    }
}

impl Template {
    /// Parses `lit`; errors (spanned on it) on unbalanced braces or a
    /// malformed placeholder.
    pub(crate) fn parse(lit: LitStr) -> syn::Result<Self> {
        let parts = parse_parts(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?;
        Ok(Template { lit, parts })
    }

    /// The placeholders, in order.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Arg(a) => Some(a),
            Part::Text(_) => None,
        })
    }

    /// Records an error for every placeholder that names no parameter of
    /// `input`, and for `{self..}` in a fn without a receiver.
    pub(crate) fn check(&self, cx: &Ctxt, input: &AsyncFn) {
        for p in self.placeholders() {
            if p.root == "self" {
                if !input.has_receiver() {
                    cx.error_at(
                        self.lit.span(),
                        format_args!(
                            "`{p}` needs a method with a `self` receiver; `{}` has none",
                            input.ident()
                        ),
                    );
                }
            } else if input.binding(&p.root).is_none() {
                let names = input.binding_names();
                let expected = if names.is_empty() {
                    format!("`{}` has no parameters", input.ident())
                } else {
                    format!(
                        "parameters are {}",
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                cx.error_at(
                    self.lit.span(),
                    format_args!(
                        "`{p}` names no parameter of `{}`; {expected}",
                        input.ident()
                    ),
                );
            }
        }
    }

    /// An expression of type `String`: the rendered template. Placeholder
    /// identifiers carry the literal's span, so they resolve to the user's
    /// bindings.
    pub(crate) fn render(&self) -> TokenStream {
        let span = self.lit.span();
        let mut fmt = String::new();
        let mut args = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => fmt.push_str(&t.replace('{', "{{").replace('}', "}}")),
                Part::Arg(p) => {
                    fmt.push_str("{}");
                    args.push(placeholder_expr(p, span));
                }
            }
        }
        let fmt = LitStr::new(&fmt, span);
        quote_spanned! {span=>
            ::cacheable::__private::render(::core::format_args!(#fmt #(, #args)*))
        }
    }
}

impl Template {
    /// An expression of type `&[KeyPart<'_>; N]`: the template's literal
    /// text and placeholder values, for a key that the runtime renders
    /// injectively (each part escaped on its own).
    pub(crate) fn key_parts(&self) -> TokenStream {
        let span = self.lit.span();
        let parts = self.parts.iter().map(|part| match part {
            Part::Text(t) => {
                let t = LitStr::new(t, span);
                quote_spanned!(span=> ::cacheable::__private::KeyPart::Text(#t))
            }
            Part::Arg(p) => {
                let value = placeholder_expr(p, span);
                quote_spanned!(span=> ::cacheable::__private::KeyPart::Value(#value))
            }
        });
        quote_spanned!(span=> &[#(#parts),*])
    }
}

fn placeholder_expr(p: &Placeholder, span: Span) -> TokenStream {
    let root = if p.root == "self" {
        quote_spanned!(span=> self)
    } else {
        let ident = format_ident!("{}", p.root, span = span);
        quote_spanned!(span=> #ident)
    };
    let fields = p.fields.iter().map(|f| {
        if f.bytes().all(|b| b.is_ascii_digit()) {
            let index = syn::Index {
                index: f.parse().unwrap_or(0),
                span,
            };
            quote_spanned!(span=> .#index)
        } else {
            let ident = format_ident!("{}", f, span = span);
            quote_spanned!(span=> .#ident)
        }
    });
    quote_spanned!(span=> &#root #(#fields)*)
}

fn parse_parts(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err("unmatched `}` in template; write `}}` for a literal brace".into()),
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err(
                                "unclosed `{` in template; write `{{` for a literal brace".into()
                            );
                        }
                        Some(c) => inner.push(c),
                    }
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Arg(parse_placeholder(inner.trim())?));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    let invalid = || {
        format!(
            "invalid placeholder `{{{inner}}}`; expected `{{param}}`, `{{param.field}}` or `{{self.field}}`"
        )
    };
    let mut segments = inner.split('.');
    let root = segments.next().unwrap_or_default();
    if !is_ident(root) {
        return Err(invalid());
    }
    let fields: Vec<String> = segments.map(str::to_owned).collect();
    if fields
        .iter()
        .any(|f| !is_ident(f) && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())))
    {
        return Err(invalid());
    }
    if root == "self" && fields.is_empty() {
        return Err("`{self}` cannot be rendered; name a field, as in `{self.id}`".into());
    }
    Ok(Placeholder {
        root: root.to_owned(),
        fields,
    })
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn arg(root: &str, fields: &[&str]) -> Part {
        Part::Arg(Placeholder {
            root: root.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        })
    }

    #[test]
    fn parses_text_and_placeholders() {
        assert_eq!(
            parse_parts("user:{id}:{user.org_id}{self.0}").unwrap(),
            [
                Part::Text("user:".into()),
                arg("id", &[]),
                Part::Text(":".into()),
                arg("user", &["org_id"]),
                arg("self", &["0"]),
            ]
        );
        assert_eq!(parse_parts("{{x}}").unwrap(), [Part::Text("{x}".into())]);
        assert_eq!(parse_parts("").unwrap(), []);
        assert_eq!(parse_parts("{ id }").unwrap(), [arg("id", &[])]);
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "{", "}", "{a", "{}", "{a b}", "{a.}", "{1}", "{a:?}", "{self}", "{_}",
        ] {
            assert!(parse_parts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_with_escaped_text() {
        let t = Template::parse(syn::parse2(quote!("{{v}}:{id}:{self.a.1}")).unwrap()).unwrap();
        assert_eq!(
            t.render().to_string(),
            quote!(::cacheable::__private::render(::core::format_args!(
                "{{v}}:{}:{}",
                &id,
                &self.a.1
            )))
            .to_string()
        );
    }

    #[test]
    fn checks_placeholders_against_parameters() {
        let free = AsyncFn::parse_item(quote!(
            async fn f(id: u64, Path(p): Path<u8>) {}
        ))
        .unwrap();
        let method = AsyncFn::parse_item(quote!(
            async fn f(&self) {}
        ))
        .unwrap();
        let check = |src: TokenStream, f: &AsyncFn| {
            let cx = Ctxt::new();
            Template::parse(syn::parse2(src).unwrap())
                .unwrap()
                .check(&cx, f);
            cx.check().err().map(|e| e.to_string())
        };
        assert_eq!(check(quote!("{id}:{p.x}"), &free), None);
        assert_eq!(check(quote!("{self.x}"), &method), None);
        assert_eq!(
            check(quote!("{idd}"), &free).unwrap(),
            "`{idd}` names no parameter of `f`; parameters are `id`, `p`"
        );
        assert_eq!(
            check(quote!("{self.x}"), &free).unwrap(),
            "`{self.x}` needs a method with a `self` receiver; `f` has none"
        );
        assert_eq!(
            check(quote!("{x}"), &method).unwrap(),
            "`{x}` names no parameter of `f`; `f` has no parameters"
        );
    }
}
