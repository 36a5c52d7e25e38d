#!/usr/bin/env python3
"""The `use crate::` graph of host/src: fail on an import cycle between
top-level modules, or on an import against the layer order that
host/src/lib.rs documents.

Every `crate::NAME` path in a file of module M (host/src/M.rs or
host/src/M/...) is an edge M -> NAME. Usage: tools/check-module-graph.py
[host/src]; prints the graph with --print.
"""
import pathlib
import re
import sys

# Lowest layer first; a module may import from its own layer or below.
LAYERS = [
    {"util", "event", "plugin"},
    {"config", "tls"},
    {"telemetry"},
    {"store"},
    {"actions"},
    {"pipeline"},
    {"sources", "deploy"},
    {"api"},
    {"cli"},
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}` groups.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def module_of(root, path):
    rel = path.relative_to(root)
    first = rel.parts[0]
    return first[:-3] if first.endswith(".rs") else first


def edges(root):
    graph = {}
    for path in sorted(root.rglob("*.rs")):
        module = module_of(root, path)
        if module in ("lib", "main"):
            continue
        text = path.read_text()
        # Comments and doc comments are not imports.
        text = re.sub(r"//.*", "", text)
        targets = set(PATH.findall(text))
        for group in GROUP.findall(text):
            targets |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
        targets.discard(module)
        targets.discard("")
        graph.setdefault(module, {})
        for t in targets:
            graph[module].setdefault(t, set()).add(str(path.relative_to(root)))
    return graph


def find_cycle(graph):
    state = {}
    stack = []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, {})):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = pathlib.Path(args[0] if args else "host/src")
    graph = edges(root)
    if "--print" in sys.argv:
        for m in sorted(graph, key=lambda m: (LAYER.get(m, 99), m)):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    problems = []
    unknown = sorted(set(graph) - set(LAYER))
    if unknown:
        problems.append(f"modules missing from the layer list: {', '.join(unknown)}")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for m, targets in sorted(graph.items()):
        for t, files in sorted(targets.items()):
            if t in LAYER and m in LAYER and LAYER[t] > LAYER[m]:
                problems.append(
                    f"{m} (layer {LAYER[m] + 1}) imports {t} (layer {LAYER[t] + 1}) in {', '.join(sorted(files))}"
                )
    for p in problems:
        print(f"module graph: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"module graph: {len(graph)} modules, no cycle, layer order kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
