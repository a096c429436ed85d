#!/usr/bin/env python3
"""Lists the `crate::X` edges between top-level modules of src/ and prints every
import circle (strongly connected component with more than one module).

Usage: scripts/module_cycles.py [--tests] [--edges] [--within=MODULE] [SRC_DIR]

With --within=config the same is done one level down, for the submodules of
src/config/ (`super::X` and `crate::config::X` paths); edges to and from the
parent (`mod.rs`) are left out, since a parent declares and re-exports its children.

Without --tests, unit-test code (files named tests.rs, and everything after a
`#[cfg(test)]` line) is left out: tests may use the simulator, production may not.
Comments are ignored; `super::` inside a top-level module stays inside it.
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
within = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--within=")), None)
with_tests = "--tests" in sys.argv
show_edges = "--edges" in sys.argv
src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
src = os.path.normpath(src)

PATH = re.compile(r"\b(?:crate|cas_renewd)::(\{[^}]*\}|[a-z_][a-z0-9_]*)")


def top_module(rel):
    first = rel.split(os.sep)[0]
    if first in ("lib.rs", "main.rs"):
        return first[:-3]
    return first[:-3] if first.endswith(".rs") else first


def code_of(path):
    text = open(path, encoding="utf-8").read()
    if not with_tests:
        if os.path.basename(path) == "tests.rs" or f"{os.sep}tests{os.sep}" in path:
            return ""
        cut = text.find("#[cfg(test)]")
        if cut >= 0:
            text = text[:cut]
    text = re.sub(r"//[^\n]*", "", text)
    return text


edges = {}


def names_of(target):
    """The module names a path's first segment gives: `x` or each of `{x, y::z}`."""
    if target.startswith("{"):
        return [t.strip().split("::")[0] for t in target[1:-1].split(",")]
    return [target]


def add_within_edges():
    base = os.path.join(src, within)
    subs = {f[:-3] if f.endswith(".rs") else f for f in os.listdir(base)} - {"mod"}
    pat = re.compile(r"\b(?:super|crate::" + within + r")::(\{[^}]*\}|[a-z_][a-z0-9_]*)")
    for root, _, files in os.walk(base):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            here = top_module(os.path.relpath(path, base))
            if here == "mod":
                continue
            for m in pat.finditer(code_of(path)):
                for name in names_of(m.group(1)):
                    if name in subs and name != here:
                        edges.setdefault(here, set()).add(name)


if within:
    add_within_edges()
for root, _, files in ([] if within else os.walk(src)):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)
        here = top_module(rel)
        for m in PATH.finditer(code_of(path)):
            for name in names_of(m.group(1)):
                if name and name not in ("self", here):
                    edges.setdefault(here, set()).add(name)

modules = sorted(set(edges) | {t for ts in edges.values() for t in ts})


def sccs():
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in modules:
        if v not in index:
            visit(v)
    return out


if show_edges:
    for m in modules:
        print(f"{m} -> {', '.join(sorted(edges.get(m, ()))) or '-'}")
circles = [c for c in sccs() if len(c) > 1]
for c in circles:
    inner = [f"{a}->{b}" for a in c for b in sorted(edges.get(a, ())) if b in c]
    print(f"circle: {' '.join(c)}  ({'; '.join(inner)})")
print(f"{len(circles)} circle(s)")
sys.exit(1 if circles else 0)
