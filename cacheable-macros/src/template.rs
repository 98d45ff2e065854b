//! String templates of the attributes (`tags = ["user:{id}"]`,
//! `key = "{id}:{lang}"`): literal text with placeholders, rendered with
//! `Display` (or `Debug` with `:?`); `{{` and `}}` are literal braces.
//!
//! A placeholder is a parameter binding or `self`, then field accesses and
//! method calls whose arguments are literals: `{id}`, `{user.org_id}`,
//! `{self.0}`, `{user.id()}`, `{name.to_lowercase()}`, `{s.get(0)}`,
//! `{kind:?}`. In tags, `{ret..}` names the function's result (the
//! `Ok`/`Some` value), rendered after the body.

use proc_macro2::{Delimiter, Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote_spanned};
use syn::LitStr;

use crate::ctxt::Ctxt;
use crate::input::AsyncFn;

/// The root that names the result in tag templates.
pub(crate) const RET: &str = "ret";

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
    /// `{root.field.method()}`.
    Arg(Placeholder),
}

/// `{root}`, `{root.a.b()}`, `{root:?}`; `root` is a parameter binding,
/// `self`, or (in tags) `ret`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// The binding (or `self`, `ret`).
    pub(crate) root: String,
    /// Field accesses and method calls, in order.
    pub(crate) path: Vec<Segment>,
    /// `:?`: rendered with `Debug`.
    pub(crate) debug: bool,
}

/// One step after the root of a placeholder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// `.field` or `.0`.
    Field(String),
    /// `.method(lit, ..)`: the arguments as literal source text.
    Method(String, Vec<String>),
}

impl std::fmt::Display for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        f.write_str(&self.root)?;
        for segment in &self.path {
            match segment {
                Segment::Field(field) => write!(f, ".{field}")?,
                Segment::Method(name, args) => write!(f, ".{name}({})", args.join(", "))?,
            }
        }
        if self.debug {
            f.write_str(":?")?;
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

    /// Whether a placeholder names the result (`{ret..}`): such a tag is
    /// rendered after the body.
    pub(crate) fn names_ret(&self) -> bool {
        self.placeholders().any(|p| p.root == RET)
    }

    /// [`Template::check`] for a tag template, where `{ret..}` names the
    /// result: a parameter named `ret` would be ambiguous and is an error.
    pub(crate) fn check_tag(&self, cx: &Ctxt, input: &AsyncFn) {
        if self.names_ret() && input.binding(RET).is_some() {
            cx.error_at(
                self.lit.span(),
                format_args!(
                    "`{{ret}}` in a tag names the result of `{}`, which has a parameter named `ret`; \
                     rename the parameter",
                    input.ident()
                ),
            );
        }
        self.check_roots(cx, input, true);
    }

    /// Records an error for every placeholder that names no parameter of
    /// `input`, and for `{self..}` in a fn without a receiver.
    pub(crate) fn check(&self, cx: &Ctxt, input: &AsyncFn) {
        self.check_roots(cx, input, false);
    }

    fn check_roots(&self, cx: &Ctxt, input: &AsyncFn, ret_allowed: bool) {
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
            } else if !(ret_allowed && p.root == RET) && input.binding(&p.root).is_none() {
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
                let hint = if p.root == RET {
                    "; the result (`{ret}`) can be named only in `tags`, which render after the body"
                } else {
                    ""
                };
                cx.error_at(
                    self.lit.span(),
                    format_args!(
                        "`{p}` names no parameter of `{}`; {expected}{hint}",
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
        self.render_with(|p, _| placeholder_expr(p, self.lit.span()))
    }

    /// A template that names the result, split in two: statements to run
    /// before the body, which render every other placeholder into a local
    /// `String` (the body takes the arguments), and an expression of type
    /// `String` to evaluate after it, where `ret` is bound to the result.
    /// `n` tells this template's locals from other templates'.
    pub(crate) fn render_after_body(&self, n: usize) -> (Vec<TokenStream>, TokenStream) {
        let span = self.lit.span();
        let mut before = Vec::new();
        let rendered = self.render_with(|p, j| {
            if p.root == RET {
                return placeholder_expr(p, span);
            }
            let local = Ident::new(&format!("__cacheable_ret{n}_{j}"), Span::mixed_site());
            let fmt = LitStr::new(if p.debug { "{:?}" } else { "{}" }, span);
            let value = placeholder_expr(p, span);
            before.push(quote_spanned! {span=>
                let #local = ::cacheable::__private::render(::core::format_args!(#fmt, #value));
            });
            quote_spanned!(span=> &#local)
        });
        (before, rendered)
    }

    /// `render(format_args!(..))` with `value(placeholder, index)` for each
    /// placeholder's argument.
    fn render_with(
        &self,
        mut value: impl FnMut(&Placeholder, usize) -> TokenStream,
    ) -> TokenStream {
        let span = self.lit.span();
        let mut fmt = String::new();
        let mut args = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => fmt.push_str(&t.replace('{', "{{").replace('}', "}}")),
                Part::Arg(p) => {
                    fmt.push_str(if p.debug { "{:?}" } else { "{}" });
                    args.push(value(p, args.len()));
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
            Part::Arg(p) if p.debug => {
                let value = placeholder_expr(p, span);
                quote_spanned!(span=> ::cacheable::__private::KeyPart::Debug(#value))
            }
            Part::Arg(p) => {
                let value = placeholder_expr(p, span);
                quote_spanned!(span=> ::cacheable::__private::KeyPart::Value(#value))
            }
        });
        quote_spanned!(span=> &[#(#parts),*])
    }
}

/// `&root.a.b()` for `Debug`; `display(&root.a.b())` for `Display`, which
/// names the template in the error when the value is not `Display`.
fn placeholder_expr(p: &Placeholder, span: Span) -> TokenStream {
    let root = if p.root == "self" {
        quote_spanned!(span=> self)
    } else {
        let ident = format_ident!("{}", p.root, span = span);
        quote_spanned!(span=> #ident)
    };
    let path = p.path.iter().map(|segment| match segment {
        Segment::Field(f) if f.bytes().all(|b| b.is_ascii_digit()) => {
            let index = syn::Index {
                index: f.parse().unwrap_or(0),
                span,
            };
            quote_spanned!(span=> .#index)
        }
        Segment::Field(f) => {
            let ident = format_ident!("{}", f, span = span);
            quote_spanned!(span=> .#ident)
        }
        Segment::Method(name, args) => {
            let ident = format_ident!("{}", name, span = span);
            let args = args.iter().map(|a| {
                let mut tokens: TokenStream = a.parse().unwrap_or_default();
                tokens = tokens
                    .into_iter()
                    .map(|mut t| {
                        t.set_span(span);
                        t
                    })
                    .collect();
                tokens
            });
            quote_spanned!(span=> .#ident(#(#args),*))
        }
    });
    if p.debug {
        quote_spanned!(span=> &#root #(#path)*)
    } else {
        quote_spanned!(span=> ::cacheable::__private::display(&#root #(#path)*))
    }
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

/// What a placeholder may be, for error messages.
const SUPPORTED: &str = "a placeholder is a parameter (`{id}`), its fields (`{user.org_id}`, \
     `{self.id}`) and method calls without arguments or with literal ones \
     (`{user.id()}`, `{name.to_lowercase()}`), rendered with `Display`, or with `Debug` \
     after `:?` (`{kind:?}`); in tags, `{ret}` names the result";

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    let invalid = || format!("unsupported placeholder `{{{inner}}}`; {SUPPORTED}");
    // The lexer is the compiler's inside a macro (and proc-macro2's in unit
    // tests): literal arguments are Rust literals, spelled as in Rust.
    let tokens: Vec<TokenTree> = inner
        .parse::<TokenStream>()
        .map_err(|_| invalid())?
        .into_iter()
        .collect();
    let mut tokens = tokens.as_slice();
    let mut debug = false;
    if let [rest @ .., TokenTree::Punct(colon), TokenTree::Punct(q)] = tokens
        && colon.as_char() == ':'
        && q.as_char() == '?'
    {
        debug = true;
        tokens = rest;
    }
    let [TokenTree::Ident(root), rest @ ..] = tokens else {
        return Err(invalid());
    };
    let mut rest = rest;
    let root = root.to_string();
    if root == "_" || root.starts_with("r#") {
        return Err(invalid());
    }
    let mut path = Vec::new();
    while let [TokenTree::Punct(dot), next, tail @ ..] = rest {
        if dot.as_char() != '.' {
            return Err(invalid());
        }
        rest = tail;
        match next {
            TokenTree::Ident(name) => {
                if let [TokenTree::Group(g), tail @ ..] = rest
                    && g.delimiter() == Delimiter::Parenthesis
                {
                    let args = literal_args(g.stream()).ok_or_else(invalid)?;
                    path.push(Segment::Method(name.to_string(), args));
                    rest = tail;
                } else {
                    path.push(Segment::Field(name.to_string()));
                }
            }
            // `.0`, or `.0.1` (lexed as one float literal).
            TokenTree::Literal(index) => {
                let index = index.to_string();
                let fields: Vec<&str> = index.split('.').collect();
                if fields.len() > 2
                    || fields
                        .iter()
                        .any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(invalid());
                }
                path.extend(fields.into_iter().map(|f| Segment::Field(f.to_owned())));
            }
            _ => return Err(invalid()),
        }
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    if root == "self" && path.is_empty() {
        return Err("`{self}` cannot be rendered; name a field, as in `{self.id}`".into());
    }
    Ok(Placeholder { root, path, debug })
}

/// The arguments of a method call in a placeholder: literals (`0`, `"x"`,
/// `'c'`, `-1`, `true`), separated by commas; `None` for anything else.
fn literal_args(stream: TokenStream) -> Option<Vec<String>> {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    if tokens.is_empty() {
        return Some(Vec::new());
    }
    tokens
        .split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
        .map(|arg| match arg {
            [TokenTree::Literal(l)] => Some(l.to_string()),
            [TokenTree::Punct(minus), TokenTree::Literal(l)] if minus.as_char() == '-' => {
                let l = l.to_string();
                l.starts_with(|c: char| c.is_ascii_digit())
                    .then(|| format!("-{l}"))
            }
            [TokenTree::Ident(b)] if b == "true" || b == "false" => Some(b.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn arg(root: &str, fields: &[&str]) -> Part {
        Part::Arg(Placeholder {
            root: root.into(),
            path: fields
                .iter()
                .map(|f| Segment::Field((*f).to_owned()))
                .collect(),
            debug: false,
        })
    }

    #[test]
    fn parses_text_and_placeholders() {
        assert_eq!(
            parse_parts("user:{id}:{user.org_id}{self.0}{p.0.1}").unwrap(),
            [
                Part::Text("user:".into()),
                arg("id", &[]),
                Part::Text(":".into()),
                arg("user", &["org_id"]),
                arg("self", &["0"]),
                arg("p", &["0", "1"]),
            ]
        );
        assert_eq!(parse_parts("{{x}}").unwrap(), [Part::Text("{x}".into())]);
        assert_eq!(parse_parts("").unwrap(), []);
        assert_eq!(parse_parts("{ id }").unwrap(), [arg("id", &[])]);
    }

    #[test]
    fn parses_methods_and_debug() {
        let [Part::Arg(p)] =
            &parse_parts("{user.name.get(0, -1, 'c', \"s\", true).len():?}").unwrap()[..]
        else {
            panic!("one placeholder")
        };
        assert!(p.debug);
        assert_eq!(
            p.path,
            [
                Segment::Field("name".into()),
                Segment::Method(
                    "get".into(),
                    vec![
                        "0".into(),
                        "-1".into(),
                        "'c'".into(),
                        "\"s\"".into(),
                        "true".into()
                    ]
                ),
                Segment::Method("len".into(), vec![]),
            ]
        );
        assert_eq!(
            p.to_string(),
            "{user.name.get(0, -1, 'c', \"s\", true).len():?}"
        );
        assert_eq!(
            parse_parts("{ret.id()}").unwrap(),
            [Part::Arg(Placeholder {
                root: "ret".into(),
                path: vec![Segment::Method("id".into(), vec![])],
                debug: false,
            })]
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "{",
            "}",
            "{a",
            "{}",
            "{a b}",
            "{a.}",
            "{1}",
            "{self}",
            "{_}",
            "{a:#?}",
            "{a + 1}",
            "{a.f(b)}",
            "{a.f(1,)}",
            "{a.f(-b)}",
            "{a::b}",
            "{a[0]}",
            "{a.0u8}",
            "{*a}",
            "{a.f::<u8>()}",
            "{a:x}",
        ] {
            let err = parse_parts(bad).unwrap_err();
            assert!(
                err.contains("template") || err.contains(SUPPORTED) || err.contains("self"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            parse_parts("{a + 1}").unwrap_err(),
            format!("unsupported placeholder `{{a + 1}}`; {SUPPORTED}")
        );
    }

    #[test]
    fn renders_with_escaped_text() {
        let t =
            Template::parse(syn::parse2(quote!("{{v}}:{id}:{self.a.1}:{k:?}")).unwrap()).unwrap();
        assert_eq!(
            t.render().to_string(),
            quote!(::cacheable::__private::render(::core::format_args!(
                "{{v}}:{}:{}:{:?}",
                ::cacheable::__private::display(&id),
                ::cacheable::__private::display(&self.a.1),
                &k
            )))
            .to_string()
        );
        let t =
            Template::parse(syn::parse2(quote!("{n.to_lowercase()}:{s.get(\"a\", 1)}")).unwrap())
                .unwrap();
        assert_eq!(
            t.render().to_string(),
            quote!(::cacheable::__private::render(::core::format_args!(
                "{}:{}",
                ::cacheable::__private::display(&n.to_lowercase()),
                ::cacheable::__private::display(&s.get("a", 1))
            )))
            .to_string()
        );
    }

    #[test]
    fn result_templates_render_arguments_before_the_body() {
        let t = Template::parse(syn::parse2(quote!("a:{id}:{ret.slug}:{k:?}")).unwrap()).unwrap();
        assert!(t.names_ret());
        let (before, after) = t.render_after_body(3);
        assert_eq!(before.len(), 2);
        assert!(
            before[0].to_string().contains("let __cacheable_ret3_0"),
            "{}",
            before[0]
        );
        assert!(
            before[1].to_string().contains("\"{:?}\" , & k"),
            "{}",
            before[1]
        );
        assert_eq!(
            after.to_string(),
            quote!(::cacheable::__private::render(::core::format_args!(
                "a:{}:{}:{:?}",
                &__cacheable_ret3_0,
                ::cacheable::__private::display(&ret.slug),
                &__cacheable_ret3_2
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
        let named_ret = AsyncFn::parse_item(quote!(
            async fn g(ret: u8) {}
        ))
        .unwrap();
        let run = |src: TokenStream, f: &AsyncFn, tag: bool| {
            let cx = Ctxt::new();
            let t = Template::parse(syn::parse2(src).unwrap()).unwrap();
            if tag {
                t.check_tag(&cx, f);
            } else {
                t.check(&cx, f);
            }
            cx.check().err().map(|e| e.to_string())
        };
        let check = |src: TokenStream, f: &AsyncFn| run(src, f, false);
        assert_eq!(check(quote!("{id}:{p.x}:{id.f(1)}:{p:?}"), &free), None);
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
        // `ret`: the result in tags, a parameter (or an error) elsewhere.
        assert_eq!(run(quote!("{ret.a}:{id}"), &free, true), None);
        assert_eq!(
            check(quote!("{ret}"), &free).unwrap(),
            "`{ret}` names no parameter of `f`; parameters are `id`, `p`; the result (`{ret}`) \
             can be named only in `tags`, which render after the body"
        );
        assert_eq!(check(quote!("{ret}"), &named_ret), None);
        assert_eq!(
            run(quote!("{ret}"), &named_ret, true).unwrap(),
            "`{ret}` in a tag names the result of `g`, which has a parameter named `ret`; rename \
             the parameter"
        );
    }
}
