#!/usr/bin/env python3
"""Holds the engine's module graph to the rules in engine/README.md.

- No import cycle among engine modules (one file is one module; test code is left out).
- Only the facade (`engine.rs`) names `crate::Engine`; the rooms below never reach back up.
- A folder imports only the folders its row in ALLOWED names (the README's table).

Run: python3 scripts/check-engine-imports.py [--graph] [--root DIR]   (exit status 1 on a
violation; DIR defaults to engine/src). `cargo test -p engine` runs it (engine/tests/imports.rs).
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine", "src")

# Which folders (and top-level files) each may import besides itself. Keep in step with the
# table in engine/README.md.
ALLOWED = {
    "error": set(),
    "view": {"error"},
    "dates": set(),
    "base": {"error"},
    "store": {"base", "error"},
    "providers": {"base", "error", "view", "flows", "store", "sign_in", "second_factor"},
    "second_factor": {"base", "error", "store", "sign_in", "view"},
    "sign_in": {"base", "error", "store", "second_factor", "view", "dates", "flows", "providers"},
    "apps": {"base", "error", "store", "accounts", "sign_in", "view", "dates"},
    "accounts": {"base", "error", "store", "flows", "providers", "apps", "sign_in", "view", "dates"},
    "flows": {"base", "error", "store", "providers", "view", "sign_in", "accounts", "apps"},
    "engine": None,  # the facade may import everything
}
# Within these pairs, the named modules only, never the whole folder (see the README).
NARROW = {
    ("second_factor", "sign_in"): {"sign_in::users", "sign_in::sessions", "sign_in::session_list"},
    # Providers drive flows; the runner drives providers.
    ("providers", "flows"): {"flows::flow", "flows::upstream"},
    # The local provider checks a password and a second factor (a TOTP code or a passkey).
    ("providers", "sign_in"): {"sign_in::users", "sign_in::password"},
    ("providers", "second_factor"): {"second_factor::two_factor", "second_factor::passkeys"},
    # A password sign-in is the local provider's flow.
    ("sign_in", "flows"): {"flows::runner"},
    ("apps", "sign_in"): {"sign_in::users"},
    ("apps", "accounts"): {"accounts::store"},
}
# Items the crate root re-exports, by the module that defines them.
ROOT_ITEMS = {
    "Engine": "engine",
    "EngineConfig": "engine",
    "Completion": "engine",
    "Progress": "engine",
    "DEFAULT_REDIS_PREFIX": "engine",
    "ErrorCode": "error",
    "DEFAULT_CHECK_INTERVAL": "accounts::health",
    "SignInRefusal": "sign_in::local_accounts",
}
TEST_ONLY = {"test_support", "scale_out_tests"}


def modules():
    found = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts == ["lib"]:
                continue
            found["::".join(parts)] = os.path.join(dirpath, name)
    return found


def code_of(path):
    text = open(path).read()
    # Test code may import what it tests from anywhere.
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n(pub(\(crate\))? )?mod tests", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"^\s*(pub(\([a-z]+\))? )?mod [a-z_]+;\s*$", "", text, flags=re.M)
    text = re.sub(r"//[^\n]*", "", text)
    return text


def expand_groups(text, root):
    """`root::{a::b, c}` -> [`root::a::b`, `root::c`] (nested braces too)."""
    paths = []
    for m in re.finditer(root + r"::\{", text):
        depth, i, start = 1, m.end(), m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[start : i - 1]
        for item in split_top(body):
            item = item.strip()
            if not item:
                continue
            head = re.match(r"([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)", item)
            if head:
                paths.append(root + "::" + head.group(1))
    return paths


def split_top(body):
    items, depth, cur = [], 0, ""
    for c in body:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += c
    items.append(cur)
    return items


def targets(module, text, known):
    paths = expand_groups(text, "crate")
    paths += re.findall(r"(?<![\w:])crate::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text)
    paths = [p[len("crate::") :] if p.startswith("crate::") else p for p in paths]
    if module.startswith("providers::"):
        for p in re.findall(r"(?<![\w:])super::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
            paths.append("providers::" + p)
    out = set()
    for p in paths:
        parts = p.split("::")
        if len(parts) == 1 and parts[0] in ROOT_ITEMS:
            out.add(ROOT_ITEMS[parts[0]])
            continue
        for n in range(len(parts), 0, -1):
            cand = "::".join(parts[:n])
            if cand in known:
                out.add(cand)
                break
    out.discard(module)
    return out


def folder(module):
    return module.split("::")[0]


def main():
    global ROOT
    if "--root" in sys.argv:
        ROOT = sys.argv[sys.argv.index("--root") + 1]
    known = modules()
    graph = {}
    for module, path in known.items():
        if module in TEST_ONLY:
            continue
        graph[module] = targets(module, code_of(path), known) - TEST_ONLY
    problems = []

    for module, deps in sorted(graph.items()):
        if "engine" in deps and module != "engine":
            problems.append(f"{module} imports the facade (crate::Engine or crate::engine): only engine.rs may")
        allowed = ALLOWED.get(folder(module))
        if allowed is None:
            continue
        for dep in sorted(deps):
            f = folder(dep)
            if f == folder(module):
                continue
            if f not in allowed:
                problems.append(f"{module} imports {dep}: {folder(module)}/ may not import {f}/")
                continue
            narrow = NARROW.get((folder(module), f))
            if narrow and dep not in narrow:
                problems.append(f"{module} imports {dep}: from {f}/ it may import only {', '.join(sorted(narrow))}")

    # Cycles: Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    for comp in sccs:
        edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        problems.append("import cycle among " + ", ".join(comp) + " (" + "; ".join(edges) + ")")

    if "--graph" in sys.argv:
        for module, deps in sorted(graph.items()):
            print(f"{module}: {', '.join(sorted(deps))}")
    for p in problems:
        print("engine imports:", p)
    if problems:
        sys.exit(1)
    print(f"engine imports: {len(graph)} modules, no cycle, every folder within its rules")


if __name__ == "__main__":
    main()
