"""Pictures of graphs and compiled plans, in Graphviz DOT.

`graph_dot(graph)` draws a graph's data flow: inputs and outputs as shapes of their own, one box
per op labelled as the printed IR writes it (`%3 = mul(%1, 2)`, constants inline), and edges
labelled with the type of the value they carry. `plan_dot(plan)` draws a compiled plan's
optimised graph the same way, each fusion group a cluster named after its kernel (the name the
profiler shows); the steps outside kernels (matmul through BLAS, indexing, ...) stay single
boxes. `render(text, path)` writes DOT text to a file, through Graphviz's `dot` program for the
image formats.
"""
import os
import shutil
import subprocess

from ..ir.graph import format_call, format_type, format_value, name_values

INPUT = 'shape=invhouse style=filled fillcolor="#dbe8f7"'
OUTPUT = 'shape=house style=filled fillcolor="#e0f0d8"'
KERNEL = 'style="rounded,filled" fillcolor="#fdf3dc"'
IMAGE_FORMATS = ("svg", "png", "pdf")
TEXT_FORMATS = ("dot", "gv")
GRAPHVIZ_MISSING = ("needs Graphviz's `dot` program, which is not on PATH. Install Graphviz "
                    "(Debian/Ubuntu: apt install graphviz; conda: conda install graphviz; "
                    "macOS: brew install graphviz; the pip package `graphviz` is only Python bindings "
                    "and does not include it), or draw to a .dot file, which needs no Graphviz")


def quote(text):
    """A DOT string: quotes and backslashes escaped (a backslash would start one of DOT's label
    escapes, such as \\N for the node's name), newlines as DOT's \\n."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n") + '"'


def graph_dot(graph, name="graph", clusters=()):
    """`graph` in DOT. `clusters` are (label, member nodes) pairs, each drawn as a box around its
    members."""
    names, statements = name_values(graph.nodes, graph.inputs)
    ids = {key: "v" + name[1:] for key, name in names.items()}   # %3 -> v3
    lines = [f"digraph {quote(name)} {{",
             '  graph [fontname="monospace" fontsize=11];',
             '  node [shape=box fontname="monospace" fontsize=10];',
             '  edge [fontname="monospace" fontsize=9];']
    for node in graph.inputs:
        lines.append(f"  {ids[id(node)]} [label={quote(f'{names[id(node)]}: {format_type(node.dtype, node.shape)}')} "
                     f"{INPUT}];")

    cluster_of = {id(node): i for i, (_, members) in enumerate(clusters) for node in members}
    members = [[] for _ in clusters]
    for node in statements:
        declaration = f"{ids[id(node)]} [label={quote(f'{names[id(node)]} = {format_call(node, names)}')}];"
        i = cluster_of.get(id(node))
        if i is None:
            lines.append("  " + declaration)
        else:
            members[i].append("    " + declaration)
    for i, (label, _) in enumerate(clusters):
        lines += [f"  subgraph cluster_{i} {{", f"    label={quote(label)} {KERNEL};"] + members[i] + ["  }"]

    def flow(value, target):
        return f"  {ids[id(value)]} -> {target} [label={quote(format_type(value.dtype, value.shape))}];"

    for node in statements:
        lines += [flow(v, ids[id(node)]) for v in node.inputs if id(v) in ids]   # constants are in the label
    for i, value in enumerate(graph.outputs):
        if id(value) in ids:
            lines += [f"  out{i} [label={quote(f'output {i}')} {OUTPUT}];", flow(value, f"out{i}")]
        else:   # a constant output
            lines.append(f"  out{i} [label={quote(f'output {i} = {format_value(value, names)}')} {OUTPUT}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def plan_dot(plan):
    """A compiled plan's optimised graph in DOT, each fusion group a cluster labelled with its
    kernel's name and op count."""
    clusters = [(f"{k.name}: {len(k.group.nodes)} op{'s' if len(k.group.nodes) != 1 else ''}", k.group.nodes)
                for k in plan.kernels]
    return graph_dot(plan.graph, plan.label, clusters)


def render(text, path):
    """Write DOT text to `path`, in the format its extension names: .dot or .gv as the text
    itself, .svg, .png or .pdf as an image drawn by Graphviz's `dot`."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1][1:].lower()
    if extension in TEXT_FORMATS:
        with open(path, "w") as file:
            file.write(text)
        return
    if extension not in IMAGE_FORMATS:
        raise ValueError(f"draw: cannot tell which format to write {path!r} in from its extension; "
                         f"use one of {', '.join('.' + e for e in IMAGE_FORMATS + TEXT_FORMATS)}")
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(f"draw: writing {path!r} {GRAPHVIZ_MISSING}")
    result = subprocess.run([program, f"-T{extension}", "-o", path], input=text, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"draw: Graphviz's dot could not write {path!r}: {result.stderr.strip()}")
