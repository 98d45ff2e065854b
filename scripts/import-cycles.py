#!/usr/bin/env python3
# Checks that a crate's import graph has no cycles, at two levels:
#   - top level: `a -> b` when any file under module `a` names `crate::b`;
#   - file level: each file is its module path (`cache/read.rs` is
#     `cache::read`, `cache/mod.rs` is `cache`) and `crate::a::b::C` is an
#     edge to the longest module path that exists (`a::b` if it is a module).
# Only `crate::` paths count (in `use` trees, in code, in attribute strings such
# as `serialize_with = "crate::stats::millis"`); comments and test modules
# (`#[cfg(test)] mod x { .. }` and `#[cfg(test)] mod x;` files) are left out,
# since tests may reach anywhere. A module using its own children or parent
# through `self::`/`super::` is structure, not an import, and is not counted.
# Prints both graphs and their strongly connected components; exits 1 if any
# level has a cycle. Usage: scripts/import-cycles.py cacheable-runtime/src
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "cacheable-runtime/src"

MOD_DECL = re.compile(
    r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*([;{])"
)


def strip_comments(src):
    """Source with comments blanked out; string literals are kept."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif src[i] == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        elif src[i] == "'" and i + 2 < n and (src[i + 2] == "'" or src[i + 1] == "\\"):
            # char literal such as '"' or '\n' (not a lifetime)
            j = src.find("'", i + 2 if src[i + 1] == "\\" else i + 1)
            out.append(src[i : j + 1])
            i = j + 1
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


def block_end(src, open_brace):
    """Index just past the `}` closing the `{` at open_brace."""
    depth = 0
    for k in range(open_brace, len(src)):
        if src[k] == "{":
            depth += 1
        elif src[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(src)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    out = []

    def walk(prefix, t):
        parts, depth, cur = [], 0, ""
        for ch in t:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        for p in parts:
            if not p:
                continue
            b = p.find("{")
            if b >= 0:
                walk(prefix + p[:b], p[b + 1 : p.rfind("}")])
            else:
                out.append(prefix + p)

    walk("", tree)
    return out


files = {}  # module path -> comment-free, test-free source


def load(path, modpath):
    src = strip_comments(open(path).read())
    here = os.path.dirname(path)
    base = os.path.basename(path)
    # children of a non-mod.rs file foo.rs live in foo/
    child_dir = here if base in ("lib.rs", "mod.rs", "main.rs") else os.path.join(here, base[:-3])
    kept, pos = [], 0
    for m in MOD_DECL.finditer(src):
        if m.start() < pos:
            continue
        attrs, name, kind = m.group(1), m.group(2), m.group(3)
        is_test = "cfg(test)" in attrs
        end = block_end(src, m.end() - 1) if kind == "{" else m.end()
        if is_test:
            kept.append(src[pos : m.start()])
            pos = end
            continue
        if kind == ";":
            pm = re.search(r'#\[path\s*=\s*"([^"]+)"\]', attrs)
            if pm:
                child = os.path.join(here, pm.group(1))
            elif os.path.exists(os.path.join(child_dir, name + ".rs")):
                child = os.path.join(child_dir, name + ".rs")
            else:
                child = os.path.join(child_dir, name, "mod.rs")
            load(child, modpath + [name])
        # inline non-test modules stay part of this file
    kept.append(src[pos:])
    files["::".join(modpath) or "crate"] = "".join(kept)


load(os.path.join(root, "lib.rs"), [])
modules = set(files)


def refs(src):
    paths = []
    for m in re.finditer(r"\buse\s+(?:::)?crate::([^;]*);", src):
        body = m.group(1).strip()
        paths += expand_use_tree(body[1:-1] if body.startswith("{") else body)
    for m in re.finditer(r"\bcrate((?:::[A-Za-z_][A-Za-z0-9_]*)+)", src):
        paths.append(m.group(1)[2:])
    return paths


def resolve(path):
    segs = [s for s in path.split("::") if s and s != "self"]
    for k in range(len(segs), 0, -1):
        cand = "::".join(segs[:k])
        if cand in modules:
            return cand
    return None


def sccs(graph):
    idx, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        idx[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in idx:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in idx:
            visit(v)
    return [c for c in out if len(c) > 1]


file_graph = {m: set() for m in modules if m != "crate"}
top_graph = {}
for m in file_graph:
    top = m.split("::")[0]
    top_graph.setdefault(top, set())
    for p in refs(files[m]):
        target = resolve(p)
        if target is None or target == "crate":
            continue
        if target != m:
            file_graph[m].add(target)
        if target.split("::")[0] != top:
            top_graph[top].add(target.split("::")[0])

failed = False
for label, graph in (("top level", top_graph), ("file level", file_graph)):
    print(f"== {label}")
    for m in sorted(graph):
        print(f"{m} -> {', '.join(sorted(graph[m]))}")
    cycles = sccs(graph)
    print(f"{label} cycles:", cycles if cycles else "none")
    failed |= bool(cycles)
sys.exit(1 if failed else 0)
