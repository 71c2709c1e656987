#!/usr/bin/env python3
"""Finds cycles between the crate's modules: which modules each file names (`crate::...` and
`super::...` paths, `use` lines included, outside `#[cfg(test)]` items), then the strongly
connected components of that graph without the calls in ALLOWED_EDGES. Exits 1 on a cycle.

Usage: python3 scripts/module_cycles.py [-v]   (-v also prints every module's dependencies)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Calls that go up, each explained in docs/findings.md ("Layering exceptions still open"):
# left out of the graph, so that any other call that closes a cycle is found.
ALLOWED_EDGES = {
    ("options::report", ""): "the report at exit reads crate::stats(), the top",
    ("os", "options::report"): "out of memory warns (once) through options",
    ("sync::futex", "os"): "errno_preserved around the futex call",
    ("arena::page", "arena::region"): "a page names its region; the region holds the pages",
    ("options::report", "options"): "the report reads the option table it reports on",
}


def module_of(path):
    rel = os.path.relpath(path, SRC)[: -len(".rs")]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def strip_tests(text):
    """Drops `#[cfg(test)]` items (a `mod tests { ... }` or a single item) and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        # Skip to the end of the item: a `;` before any `{`, or the matching `}`.
        k = j + len("#[cfg(test)]")
        depth = 0
        while k < len(text):
            c = text[k]
            if c == ";" and depth == 0:
                k += 1
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    k += 1
                    break
            k += 1
        i = k


def inner_mod_spans(text):
    """The spans of inline `mod name { ... }` blocks."""
    spans = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth, k = 0, m.end() - 1
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        spans.append((m.start(), k))
    return spans


def resolve(names, modules):
    """The longest known module that `names` (a path split on ::) starts with."""
    for n in range(len(names), 0, -1):
        candidate = "::".join(names[:n])
        if candidate in modules:
            return candidate
    return None


def expand_use_groups(text):
    """`use super::{a, b::c}` -> `use super::a; use super::b::c;` (one level of braces)."""
    def expand(m):
        prefix, inner = m.group(1), m.group(2)
        return " ".join(f"{prefix}::{item.strip()};" for item in inner.split(",") if item.strip())

    return re.sub(r"((?:crate|super)(?:::\w+)*)::\{([^{}]*)\}", expand, text)


def main():
    files = []
    for root, _, names in os.walk(SRC):
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    modules = {module_of(f): f for f in files}
    deps = {m: set() for m in modules}
    for module, path in modules.items():
        is_mod_file = os.path.basename(path) in ("mod.rs", "lib.rs")
        parent = module.split("::") if is_mod_file else module.split("::")[:-1]
        text = expand_use_groups(strip_tests(open(path).read()))
        inner = inner_mod_spans(text)
        own = [n for n in module.split("::") if n]
        for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
            names = m.group(2).split("::")[1:]
            if m.group(1) == "super":
                if any(a <= m.start() < b for a, b in inner):
                    base = own  # `super` inside an inline `mod` is this file's module
                else:
                    base = parent[:-1] if is_mod_file else parent
                names = [n for n in base if n] + names
            if m.group(1) == "crate" and len(names) == 1 and text[m.end() : m.end() + 1] == "(":
                target = ""  # a function of the crate root (`crate::stats()`)
            else:
                target = resolve(names, modules)
            if target is not None and target != module:
                deps[module].add(target)
        # A parent module naming its submodules directly (`lifecycle::bring_up` in heap/mod.rs).
        if is_mod_file:
            for m in re.finditer(r"\b(\w+)::\w+", text):
                target = "::".join([n for n in parent if n] + [m.group(1)])
                if target in modules and target != module:
                    deps[module].add(target)
    if "-v" in sys.argv:
        for m in sorted(deps):
            print(f"{m or '(lib)'}: {', '.join(sorted(d or '(lib)' for d in deps[m]))}")
    for (a, b), why in ALLOWED_EDGES.items():
        if b in deps.get(a, set()):
            deps[a].discard(b)
            print(f"allowed: {a or '(lib)'} -> {b or '(lib)'} ({why})")
    cycles = sccs(deps)
    for c in cycles:
        print("CYCLE: " + " <-> ".join(sorted(m or "(lib)" for m in c)))
    if cycles:
        sys.exit(1)
    print(f"{len(modules)} modules, no cycles but the {len(ALLOWED_EDGES)} calls allowed above")


def sccs(graph):
    """Tarjan's algorithm; components of more than one module."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()
