"""Pictures of what the compiler did: graphs and compiled plans in Graphviz DOT, and drawing them.

The DOT text is always checked by parsing it against the printed IR (every statement a node with
the statement as its label, an edge for every value it reads, labelled with that value's type).
Where Graphviz is installed, its own parse of the text must agree and it must render it."""
import html
import json
import re
import shutil
import subprocess

import pytest

import fusegrad as fg
from fusegrad.autograd.graph import backward_graph, draw, forward_graph
from fusegrad.ir import Builder, dtypes as D
from fusegrad.runtime.dot import graph_dot, quote
from fusegrad.runtime.plan import Plan

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not installed (Debian/Ubuntu: apt install graphviz); the DOT text is still "
           "checked by the tests that parse it")

LABEL = r'"((?:[^"\\]|\\.)*)"'


def _unescape(label):
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], label)


def parse_dot(text):
    """The DOT text as written by runtime.dot: nodes {id: (label, cluster or None)}, edges
    [(tail, head, label)], cluster labels in order."""
    nodes, edges, clusters, cluster = {}, [], [], None
    for line in text.splitlines():
        if m := re.fullmatch(r"  subgraph cluster_(\d+) \{", line):
            assert int(m[1]) == len(clusters)
            cluster = len(clusters)
        elif m := re.fullmatch(rf"    label={LABEL} .*;", line):
            clusters.append(_unescape(m[1]))
        elif line == "  }":
            cluster = None
        elif m := re.fullmatch(rf" +(\w+) -> (\w+) \[label={LABEL}\];", line):
            edges.append((m[1], m[2], _unescape(m[3])))
        elif m := re.fullmatch(rf" +(\w+) \[label={LABEL}.*\];", line):
            assert m[1] not in nodes, f"{m[1]} declared twice"
            nodes[m[1]] = (_unescape(m[2]), cluster)
    return nodes, edges, clusters


def parse_printed_ir(text):
    """The printed IR: input types {"%0": "f32[3]"}, statements {"%3": ("mul(%1, 2)", "f32[3]")},
    returned names."""
    header, *body, ret = text.splitlines()
    inputs = dict(re.findall(r"(%\d+): (\w+\[[\d,]*\])", header))
    statements = {}
    for line in body:
        name, call, type_ = re.fullmatch(r"    (%\d+) = (.*)  # (.*)", line).groups()
        statements[name] = (call, type_)
    return inputs, statements, ret.removeprefix("    return ").split(", ")


def assert_dot_matches_ir(text, graph):
    """Every input, statement and output of the printed graph is one DOT node; every value a
    statement reads is an edge into it labelled with the value's type."""
    inputs, statements, returned = parse_printed_ir(str(graph))
    nodes, edges, _ = parse_dot(text)
    id_of = {re.match(r"%\d+", label)[0]: node for node, (label, _) in nodes.items() if label.startswith("%")}
    assert {nodes[id_of[n]][0] for n in inputs} == {f"{n}: {t}" for n, t in inputs.items()}
    assert {nodes[id_of[n]][0] for n in statements} == {f"{n} = {call}" for n, (call, _) in statements.items()}
    type_of = {**inputs, **{n: t for n, (_, t) in statements.items()}}
    expected = [(id_of[v], id_of[n], type_of[v]) for n, (call, _) in statements.items()
                for v in re.findall(r"%\d+", call)]
    expected += [(id_of[v], f"out{i}", type_of[v]) for i, v in enumerate(returned)]
    assert sorted(edges) == sorted(expected)
    assert sorted(n for n in nodes if n.startswith("out")) == [f"out{i}" for i in range(len(returned))]
    assert len(nodes) == len(inputs) + len(statements) + len(returned)
    return nodes


def graphviz_parse(text):
    """Graphviz's own reading of DOT text: node labels, cluster labels with their members' labels,
    and edges between labels."""
    layout = json.loads(subprocess.run(["dot", "-Tjson0"], input=text, capture_output=True, text=True,
                                       check=True).stdout)
    objects = layout["objects"]
    clusters = {o["label"]: sorted(objects[i]["label"] for i in o.get("nodes", ()))
                for o in objects if o["name"].startswith("cluster_")}
    labels = sorted(o["label"] for o in objects if not o["name"].startswith("cluster_"))
    edges = sorted((objects[e["tail"]]["label"], objects[e["head"]]["label"], e["label"]) for e in layout["edges"])
    return labels, clusters, edges


def _blas_sandwich():
    """An elementwise group, a matmul, and an elementwise group ending in a reduction."""
    b = Builder()
    x = b.placeholder(None, (4, 5), D.float32)
    w = b.placeholder(None, (5, 3), D.float32)
    h = b.tanh(b.add(b.mul(x, 2.0), 1.0))
    y = b.matmul(h, w)
    return b.graph([b.sum(b.exp(b.neg(y)), axes=(1,), keepdim=False), h])


def test_forward_graph_dot_is_the_printed_ir_as_a_picture():
    x = fg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * 2).sin().sum()
    assert graph_dot(forward_graph(y)) == (
        'digraph "graph" {\n'
        '  graph [fontname="monospace" fontsize=11];\n'
        '  node [shape=box fontname="monospace" fontsize=10];\n'
        '  edge [fontname="monospace" fontsize=9];\n'
        '  v0 [label="%0: f32[3]" shape=invhouse style=filled fillcolor="#dbe8f7"];\n'
        '  v1 [label="%1 = mul(%0, 2)"];\n'
        '  v2 [label="%2 = sin(%1)"];\n'
        '  v3 [label="%3 = sum(%2, axes=(0,), keepdim=False)"];\n'
        '  v0 -> v1 [label="f32[3]"];\n'
        '  v1 -> v2 [label="f32[3]"];\n'
        '  v2 -> v3 [label="f32[3]"];\n'
        '  out0 [label="output 0" shape=house style=filled fillcolor="#e0f0d8"];\n'
        '  v3 -> out0 [label="f32[]"];\n'
        '}\n')


def test_backward_graph_dot_has_every_node_and_edge():
    x = fg.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    w = fg.tensor([[0.3], [-1.2]], requires_grad=True)
    graph = backward_graph((fg.relu(x @ w) * x.sum(1, keepdim=True)).exp().mean())
    assert_dot_matches_ir(graph_dot(graph), graph)


def test_outputs_that_are_inputs_or_constants():
    b = Builder()
    x = b.placeholder(None, (2,), D.float32)
    nodes, edges, _ = parse_dot(graph_dot(b.graph([x, b.const(2.5, D.float32)])))
    assert nodes == {"v0": ("%0: f32[2]", None), "out0": ("output 0", None), "out1": ("output 1 = 2.5", None)}
    assert edges == [("v0", "out0", "f32[2]")]


def test_plan_dot_draws_each_fusion_group_as_a_cluster_named_after_its_kernel():
    plan = Plan(_blas_sandwich(), label="sandwich")
    text = plan.to_dot()
    assert text.startswith('digraph "sandwich" {\n')
    nodes = assert_dot_matches_ir(text, plan.graph)
    _, _, clusters = parse_dot(text)
    assert len(plan.kernels) == 2
    assert clusters == [f"sandwich_k0: {len(plan.kernels[0].group.nodes)} ops",
                        f"sandwich_k1: {len(plan.kernels[1].group.nodes)} ops"]
    for i, kernel in enumerate(plan.kernels):
        members = sorted(label.split(" = ")[1].split("(")[0] for label, cluster in nodes.values() if cluster == i)
        assert members == sorted(n.op.name for n in kernel.group.nodes)
    outside = [label for label, cluster in nodes.values() if cluster is None and " = " in label]
    assert [label.split(" = ")[1].split("(")[0] for label in outside] == ["matmul"]


def test_plan_cluster_names_are_the_profiler_rows():
    def f(x, w):
        return (fg.relu(x @ w) * 2 + 1).sum()
    compiled = fg.compile(f)
    x, w = fg.randn(8, 4), fg.randn(4, 3)
    for _ in range(2):
        compiled(x, w)
    with fg.autograd.profiler.profile() as prof:
        compiled(x, w)
    _, _, clusters = parse_dot(compiled.specialisations[0].plan.to_dot())
    kernels = {"fusegrad::" + label.split(":")[0] for label in clusters}
    assert kernels and kernels <= {event.key for event in prof.key_averages()}


def _odd_label_graph():
    """sin with a string attribute holding a quote, a backslash (\\N would be the node's name to
    Graphviz) and a newline."""
    b = Builder()
    y = b.sin(b.placeholder(None, (2,), D.float32))
    y.attrs = {"note": 'say "hi" \\N\nnext'}
    return b.graph([y])


def test_labels_are_escaped():
    assert quote('say "hi" \\N\nnext\r\nline') == '"say \\"hi\\" \\\\N\\nnext\\nline"'
    text = graph_dot(_odd_label_graph(), name='the "odd"\\ one')
    assert text.startswith('digraph "the \\"odd\\"\\\\ one" {\n')
    nodes, _, _ = parse_dot(text)
    assert nodes["v1"][0] == "%1 = sin(%0, note=" + repr('say "hi" \\N\nnext') + ")"


@needs_graphviz
def test_labels_are_escaped_as_graphviz_reads_them():
    svg = subprocess.run(["dot", "-Tsvg"], input=graph_dot(_odd_label_graph()), capture_output=True, text=True,
                         check=True).stdout
    texts = [html.unescape(t) for t in re.findall(r"<text [^>]*>(.*?)</text>", svg)]
    assert "%1 = sin(%0, note=" + repr('say "hi" \\N\nnext') + ")" in texts


@needs_graphviz
@pytest.mark.parametrize("graph", ["forward", "backward", "plan"])
def test_graphviz_reads_the_same_graph(graph):
    x = fg.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    out = (fg.relu(x @ x) + x).tanh().sum()
    if graph == "plan":
        plan = Plan(_blas_sandwich())
        text = plan.to_dot()
    else:
        text = graph_dot((forward_graph if graph == "forward" else backward_graph)(out))
    nodes, edges, clusters = parse_dot(text)
    label = {node: name for node, (name, _) in nodes.items()}
    members = {name: sorted(label[n] for n, (_, c) in nodes.items() if c == i) for i, name in enumerate(clusters)}
    assert graphviz_parse(text) == (sorted(label.values()), members,
                                    sorted((label[t], label[h], e) for t, h, e in edges))
    svg = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, check=True)
    assert svg.stdout.lstrip().startswith("<?xml") and not svg.stderr


def test_draw_writes_dot_text_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no `dot` anywhere
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    draw(y, tmp_path / "forward.dot")
    draw(y, tmp_path / "backward.gv", backward=True)
    graph = backward_graph(y)
    draw(graph, str(tmp_path / "graph.dot"))
    plan = Plan(_blas_sandwich())
    draw(plan, tmp_path / "plan.dot")
    assert (tmp_path / "forward.dot").read_text() == graph_dot(forward_graph(y))
    assert (tmp_path / "backward.gv").read_text() == graph_dot(backward_graph(y))
    assert (tmp_path / "graph.dot").read_text() == graph_dot(graph)
    assert (tmp_path / "plan.dot").read_text() == plan.to_dot()


def test_draw_names_the_package_to_install_when_graphviz_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    path = tmp_path / "out.svg"
    with pytest.raises(RuntimeError) as error:
        draw(x * 2, path)
    assert str(error.value) == (
        f"draw: writing {str(path)!r} needs Graphviz's `dot` program, which is not on PATH. Install Graphviz "
        "(Debian/Ubuntu: apt install graphviz; conda: conda install graphviz; macOS: brew install graphviz; "
        "the pip package `graphviz` is only Python bindings and does not include it), or draw to a .dot file, "
        "which needs no Graphviz")
    assert not path.exists()


def test_draw_reports_graphviz_failures(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError) as error:
        draw(x * 2, tmp_path / "out.png")
    assert str(error.value) == (f"draw: Graphviz's dot could not write {str(tmp_path / 'out.png')!r}: "
                                "Error: <stdin>: syntax error in line 1")


def test_draw_refuses_unknown_formats_and_tensors_without_a_graph(tmp_path):
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError) as error:
        draw(x * 2, tmp_path / "out.jpg")
    assert str(error.value) == (f"draw: cannot tell which format to write {str(tmp_path / 'out.jpg')!r} in from "
                                "its extension; use one of .svg, .png, .pdf, .dot, .gv")
    with pytest.raises(RuntimeError) as error:
        draw(fg.tensor([1.0, 2.0]) * 2, tmp_path / "out.dot")
    assert str(error.value) == ("forward_graph: tensor 0 does not require grad and has no grad_fn, so no graph "
                                "was recorded for it; create its inputs with requires_grad=True")


@needs_graphviz
@pytest.mark.parametrize("extension, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_draw_renders_images_through_graphviz(tmp_path, extension, magic):
    x = fg.tensor([1.0, 2.0], requires_grad=True)
    path = tmp_path / f"backward.{extension}"
    draw((x.sin() * x).sum(), path, backward=True)
    assert path.read_bytes().startswith(magic)
