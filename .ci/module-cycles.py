"""Fails when the crate's modules depend on each other in a circle.

Reads the graph that `cargo modules dependencies` prints (Graphviz dot,
every item and its "uses" edges) on stdin, folds each item into the module
that holds it, and prints every cycle between modules. cargo-modules' own
`--acyclic` looks for cycles between items, where a type and its
constructor already form one, so the module-level check is done here, on
the tool's output.

cargo-modules sees types and `use` declarations, not a call to a function
or a constant by its path inside a body (`crate::metrics::global()`), so
with `--src DIR` the sources are read too: every `crate::`, `super::` and
`self::` path, and every path through a child module, outside `#[cfg(test)]`
modules, adds an edge to the module it names.
"""

import pathlib
import re
import sys

EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')
MODULE = re.compile(r'^\s*"([^"]+)" \[.*// "(?:mod|crate)" node')


CRATE = "groupban_operator"


def module_of(item, modules):
    """The innermost module that holds `item` (a module holds itself)."""
    path = item
    while path not in modules and "::" in path:
        path = path.rsplit("::", 1)[0]
    return path


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\buse\s+([^;]*\{[^;]*);", re.S)


def module_path_of(file, src):
    """`groupban_operator::a::b` for src/a/b.rs or src/a/b/mod.rs."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return "::".join([CRATE] + parts)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner = tree[:start], tree[start + 1 : i]
                parts, level, begin = [], 0, 0
                for j, c in enumerate(inner):
                    level += (c == "{") - (c == "}")
                    if c == "," and level == 0:
                        parts.append(inner[begin:j])
                        begin = j + 1
                parts.append(inner[begin:])
                return [path for part in parts if part for path in expand_use(prefix + part)]
    return [tree]


STRING = re.compile(r'r(#*)"(?:.|\n)*?"\1|b?"(?:\\.|[^"\\])*"|//[^\n]*|/\*(?:.|\n)*?\*/')
TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")


def code_only(text):
    """`text` without string literals, comments and `#[cfg(test)]` modules
    (unit tests may reach anywhere; they are not part of the build)."""
    text = STRING.sub(lambda m: '""' if m.group(0).endswith('"') else " ", text)
    while (match := TEST_MODULE.search(text)) is not None:
        depth, end = 0, len(text)
        for i in range(match.end() - 1, len(text)):
            depth += (text[i] == "{") - (text[i] == "}")
            if depth == 0:
                end = i + 1
                break
        text = text[: match.start()] + text[end:]
    return text


TEST_DECLARATION = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


def source_edges(src, modules):
    """Module -> module edges from the paths written in the sources."""
    files = sorted(pathlib.Path(src).rglob("*.rs"))
    test_only = set()
    for file in files:
        here = module_path_of(file, pathlib.Path(src))
        test_only.update(f"{here}::{name}" for name in TEST_DECLARATION.findall(file.read_text()))
    edges = set()
    for file in files:
        here = module_path_of(file, pathlib.Path(src))
        if file.name == "main.rs" or here in test_only:
            continue  # the binary's root, or a module only tests build
        text = code_only(file.read_text())
        if here not in modules:
            raise SystemExit(f"module-cycles: {file} is module {here}, which cargo-modules did not list")
        paths = []
        for tree in GROUP.findall(text):
            paths.extend(expand_use(tree))
        paths.extend(m.group(0) for m in PATH.finditer(text))
        children = {m.rsplit("::", 1)[-1] for m in modules if "::" in m and m.rsplit("::", 1)[0] == here}
        for child in children:
            paths.extend(m.group(0) for m in re.finditer(rf"(?<![\w:]){child}(?:::\w+)+", text))
        for path in paths:
            segments = path.split("::")
            if segments[0] == "crate":
                absolute = [CRATE] + segments[1:]
            elif segments[0] in ("super", "self"):
                base = here.split("::")
                while segments and segments[0] in ("super", "self"):
                    if segments.pop(0) == "super":
                        base = base[:-1]
                absolute = base + segments
            elif segments[0] in children:
                absolute = here.split("::") + segments
            else:
                continue
            target = module_of("::".join(absolute), modules)
            if target != here:
                edges.add((here, target))
    return edges


def cycles(edges):
    """Strongly connected components with more than one module, by Tarjan."""
    graph = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        # Iterative: a deep graph must not hit Python's recursion limit.
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main():
    lines = sys.stdin.read().splitlines()
    modules = {m.group(1) for m in map(MODULE.match, lines) if m}
    item_edges = [m.groups() for m in map(EDGE.match, lines) if m]
    if CRATE not in modules or len(modules) < 2 or not item_edges:
        print("module-cycles: no module graph read; is the input cargo-modules' dot output?", file=sys.stderr)
        return 2
    edges = {(module_of(a, modules), module_of(b, modules)) for a, b in item_edges}
    if len(sys.argv) == 3 and sys.argv[1] == "--src":
        edges |= source_edges(sys.argv[2], modules)
    edges = sorted((a, b) for a, b in edges if a != b)
    found = cycles(edges)
    for component in found:
        inside = set(component)
        print("module cycle: " + ", ".join(component))
        for a, b in sorted(edges):
            if a in inside and b in inside:
                print(f"  {a} -> {b}")
    if found:
        return 1
    print(f"module-cycles: {len(edges)} edges between {len(modules)} modules, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
