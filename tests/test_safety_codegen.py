"""User text never becomes code; models are safe to share between threads; memory stays bounded.

Node, input, output, parameter and graph names are user text, and so is everything a saved
model file holds. The generated modules carry that text only in escaped comments: every
identifier is ASCII and made by graphnn. Each test here failed before its fix.
"""
import io
import json
import threading
import tokenize

import numpy as np
import pytest

import graphnn as gn
from graphnn.runtime import cache as disk
from graphnn.runtime import cpu as cpu_backend

PAYLOAD = 'import os; os.system("echo PWNED > marker.txt")'
HOSTILE = [
    f"a\n{PAYLOAD}\ndef _f():\n    pass #",          # a newline ends a comment
    f'q"""\\\n{PAYLOAD}\n"""',                        # quotes and a backslash
    f"r\r{PAYLOAD}",                                  # a carriage return is a line end too
    f"n\x00{PAYLOAD}",                                # NUL
    f"s\u2028{PAYLOAD}\x0c#",                         # Unicode line separator, form feed
    "\u202e" + PAYLOAD,                               # a bidi override
    "\ufb01", "fi", "x\u00b2", "\U0001f600",         # non-ASCII, two of them equal after NFKC
]


def _hostile_graph(names=HOSTILE):
    """A small net whose every name is hostile: graph, inputs, layers, outputs."""
    g = gn.Graph(names[0] + "graph", seed=3)
    x = g.input(names[1] + "x", (None, 3))
    t = g.input(names[2] + "t", (None, 2))
    h = gn.dense(x, 4, activation="tanh", name=names[3])
    a = gn.tanh(h, name="\ufb01")                      # folds to "fi" in a Python identifier
    b = gn.sigmoid(h, name="fi")
    y = g.output(names[4] + "y", gn.dense(a * 0.5 + b, 2, name=names[5]))
    g.output("\ufb01", a)
    g.output("fi", b)
    return g, gn.mse(y, t), names[1] + "x", names[2] + "t"


def _compile_drivers(model):
    """Compile every called program into one function (the timing decides that otherwise)."""
    model.wait_compiled()
    for build in model.backend._builds.values():
        build.compile_driver(background=False)
    assert set(model.compile_status().values()) == {"compiled"}


def _tokens(source):
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def assert_user_text_confined(source):
    """Every identifier is ASCII; the payload appears only inside comments and strings."""
    compile(source, "<generated>", "exec")                 # valid Python, as a whole
    for tok in _tokens(source):
        if tok.type == tokenize.NAME:
            assert tok.string.isascii(), f"non-ASCII identifier {tok.string!r} at line {tok.start[0]}"
            assert tok.string not in ("os", "system", "PWNED"), f"user text became code: line {tok.start[0]}"
        elif tok.type not in (tokenize.COMMENT, tokenize.STRING):
            assert "PWNED" not in tok.string
    comments = [t.string for t in _tokens(source) if t.type == tokenize.COMMENT]
    assert any("PWNED" in c for c in comments), "the names should still be shown in comments"


def _feeds(xname, tname, rows=5):
    rng = np.random.default_rng(0)
    return {xname: rng.standard_normal((rows, 3)), tname: rng.standard_normal((rows, 2))}


def _agree(model, ref, feeds, tol):
    out, expect = model.forward(feeds), ref.forward(feeds)
    assert sorted(out) == sorted(expect)
    for k in expect:
        np.testing.assert_allclose(out[k], expect[k], rtol=tol, atol=tol)
    np.testing.assert_allclose(model.step(feeds), ref.step(feeds), rtol=tol)
    for k, v in ref.get_params().items():
        np.testing.assert_allclose(model.get_params()[k], v, rtol=tol, atol=tol)


def test_hostile_names_stay_in_comments_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g, loss, xname, tname = _hostile_graph()
    model = gn.compile(g, loss, target="cpu", dtype="float64", optimizer=gn.Adam(lr=0.1))
    ref = gn.compile(g, loss, target="reference", dtype="float64", optimizer=gn.Adam(lr=0.1))
    feeds = _feeds(xname, tname)
    _agree(model, ref, feeds, 1e-12)              # the kernels, called one by one
    _compile_drivers(model)
    _agree(model, ref, feeds, 1e-12)              # the whole program as one compiled function
    assert_user_text_confined(model.source)
    for path in (disk.cache_dir(None).glob("graphnn_p_*.py")):
        text = path.read_text()
        if "PWNED" in text:
            assert_user_text_confined(text)
    exported = tmp_path / "exported.py"
    model.export(exported)
    assert_user_text_confined(exported.read_text())
    assert not (tmp_path / "marker.txt").exists()


def test_names_equal_after_unicode_folding_do_not_collide():
    g, loss, xname, tname = _hostile_graph()
    model = gn.compile(g, target="cpu", dtype="float64")
    feeds = {xname: _feeds(xname, tname)[xname]}
    model.forward(feeds)
    _compile_drivers(model)
    feeds = {xname: feeds[xname] * 0.5}      # new values: nothing left over from the first call
    out = model.forward(feeds)
    expect = gn.compile(g, target="reference", dtype="float64").forward(feeds)
    np.testing.assert_allclose(out["\ufb01"], expect["\ufb01"], rtol=1e-12)
    np.testing.assert_allclose(out["fi"], expect["fi"], rtol=1e-12)
    assert not np.allclose(out["fi"], out["\ufb01"])      # tanh and sigmoid differ


@pytest.mark.cuda
def test_hostile_names_stay_in_comments_on_cuda(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g, loss, xname, tname = _hostile_graph()
    model = gn.compile(g, loss, target="cuda", dtype="float64", optimizer=gn.SGD(lr=0.1))
    ref = gn.compile(g, loss, target="reference", dtype="float64", optimizer=gn.SGD(lr=0.1))
    _agree(model, ref, _feeds(xname, tname, rows=3), 1e-10)
    assert_user_text_confined(model.source)
    assert not (tmp_path / "marker.txt").exists()


def _saved(tmp_path):
    g = gn.Graph("plain", seed=1)
    x, t = g.input("x", (None, 3)), g.input("t", (None, 2))
    h = gn.dense(x, 4, activation="tanh", name="hidden")
    y = g.output("y", gn.dense(h, 2, name="out"))
    model = gn.compile(g, gn.mse(y, t), target="reference", dtype="float64", optimizer=gn.SGD(lr=0.1))
    gn.save(model, tmp_path / "m")
    return json.loads((tmp_path / "m.json").read_text())


@pytest.mark.parametrize("where", ["node name", "attribute", "graph name", "scope"])
def test_a_model_file_cannot_run_code(tmp_path, monkeypatch, where):
    """Hostile text edited into a saved file loads as text: the model computes what it computed."""
    monkeypatch.chdir(tmp_path)
    document = _saved(tmp_path)
    expect = gn.load(tmp_path / "m", target="reference").forward({"x": np.ones((2, 3))})["y"]
    hidden = next(n for n in document["nodes"] if n["name"] == "hidden/tanh")
    if where == "node name":
        for node in document["nodes"]:
            node["name"] = HOSTILE[0] + node["name"] if node["kind"] == "op" else node["name"]
    elif where == "attribute":
        hidden["attrs"] = {**hidden.get("attrs", {}), "note": HOSTILE[1]}
    elif where == "graph name":
        document["graph"]["name"] = HOSTILE[0]
    else:
        hidden["scope"] = HOSTILE[2]
    (tmp_path / "m.json").write_text(json.dumps(document))
    try:
        model = gn.load(tmp_path / "m", target="cpu", dtype="float64")
    except gn.GraphnnError as error:          # refusing the file is fine too; running it is not
        assert str(error)
    else:
        np.testing.assert_allclose(model.forward({"x": np.ones((2, 3))})["y"], expect, rtol=1e-12)
        assert_user_text_confined(model.source) if "PWNED" in model.source else compile(
            model.source, "<generated>", "exec")
    assert not (tmp_path / "marker.txt").exists()


# -- threads and memory -----------------------------------------------------------------

def _mlp(seed=0):
    g = gn.Graph("threads", seed=seed)
    x = g.input("x", (None, 16))
    t = g.input("t", (None, 4))
    h = gn.dense(x, 64, activation="tanh", name="h")
    y = g.output("y", gn.dense(h, 4, name="o"))
    return g, gn.mse(y, t)


def test_predict_from_many_threads_gives_each_its_own_result():
    g, _ = _mlp()
    model = gn.compile(g, target="cpu")
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((50, 16)).astype(np.float32) for _ in range(4)]
    expect = [model.forward({"x": a})["y"] for a in inputs]
    wrong = []

    def work(k):
        for _ in range(200):
            if not np.array_equal(model.forward({"x": inputs[k]})["y"], expect[k]):
                wrong.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []          # one shared work array gave 39 wrong results of 800
    assert all(len(p.spares) <= cpu_backend.MAX_SPARES for p in model.backend._plans.values())


def test_training_from_two_threads_is_the_same_steps_in_some_order():
    g, loss = _mlp(seed=2)
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((32, 16)), "t": rng.standard_normal((32, 4))}
    shared = gn.compile(g, loss, target="cpu", dtype="float64", optimizer=gn.SGD(lr=0.01))
    alone = gn.compile(g, loss, target="cpu", dtype="float64", optimizer=gn.SGD(lr=0.01))

    def work():
        for _ in range(100):
            shared.step(feeds)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for _ in range(200):
        alone.step(feeds)
    assert shared.step_count == 200
    for k, v in alone.get_params().items():       # same feeds each step: order does not matter
        np.testing.assert_allclose(shared.get_params()[k], v, rtol=1e-9, atol=1e-12)


def test_work_memory_stays_that_of_the_largest_batch():
    g, _ = _mlp()
    model = gn.compile(g, target="cpu")
    rng = np.random.default_rng(4)
    for rows in [*range(1, 120), *range(119, 0, -7)]:
        out = model.forward({"x": rng.standard_normal((rows, 16)).astype(np.float32)})["y"]
        assert out.shape == (rows, 4)
    backend = model.backend
    const, per_n = backend.build("forward").meta["work"]
    assert len(backend._plans) <= cpu_backend.MAX_PLANS
    held = {id(p.bound.work.base if p.bound.work.base is not None else p.bound.work)
            for p in backend._plans.values()}
    assert held == {id(backend._arenas["forward"])}
    assert backend._arenas["forward"].size == const + per_n * 119
    x = rng.standard_normal((7, 16)).astype(np.float32)
    np.testing.assert_allclose(model.forward({"x": x})["y"],
                               gn.compile(g, target="reference").forward({"x": x})["y"], rtol=2e-5, atol=1e-6)


# -- nodes of two graphs ----------------------------------------------------------------

def test_nodes_of_two_graphs_do_not_mix():
    g1, g2 = gn.Graph("first"), gn.Graph("second")
    x1, x2 = g1.input("x", (None, 2)), g2.input("x", (None, 2))
    y1 = g1.output("y", gn.dense(x1, 1, name="d"))
    y2 = gn.dense(x2, 1, name="d")
    with pytest.raises(gn.GraphMixError, match="'first'.*'second'"):
        y1 + y2
    for target in ("reference", "cpu"):
        with pytest.raises(gn.GraphMixError, match="graph 'second'.*compiles graph 'first'"):
            gn.compile(g1, outputs={"y": y2}, target=target)


@pytest.mark.cuda
def test_cuda_buffers_stay_bounded_and_calls_from_threads_agree():
    from graphnn.runtime import cuda as cuda_backend
    g = gn.Graph("cuda_threads", seed=5)
    x = g.input("x", (None, 3))
    y = g.output("y", gn.dense(gn.dense(x, 4, activation="tanh", name="h"), 2, name="o"))
    model = gn.compile(g, target="cuda", dtype="float64")
    ref = gn.compile(g, target="reference", dtype="float64")
    rng = np.random.default_rng(6)
    for rows in range(1, 13):
        model.forward({"x": rng.standard_normal((rows, 3))})
    assert len(model.backend._views) <= cuda_backend.MAX_PLANS
    assert set(model.backend._launches) <= set(model.backend._views)
    inputs = [rng.standard_normal((3, 3)) for _ in range(3)]
    expect = [ref.forward({"x": a})["y"] for a in inputs]
    wrong = []

    def work(k):
        for _ in range(3):
            if not np.allclose(model.forward({"x": inputs[k]})["y"], expect[k], rtol=1e-10, atol=1e-12):
                wrong.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []


def test_export_makes_its_folder_and_refuses_a_folder_as_the_file(tmp_path):
    g, _ = _mlp()
    model = gn.compile(g, target="cpu")
    path = model.export(tmp_path / "new" / "folder" / "model.py")
    assert path.read_text() == model.backend.source_of(export=True)
    with pytest.raises(gn.ArgumentError, match="is a folder"):
        model.export(tmp_path / "new")


def _swapped_outputs(second):
    g = gn.Graph("same_nodes", seed=1)
    x, p = g.input("x", (None, 3)), g.parameter("p", (3,))
    q, h = gn.exp(p), gn.tanh(x)
    g.output("out0", h + q)
    g.output("out1", q if second else h)
    g.output("out2", h if second else q)
    return g


def test_graphs_that_name_their_outputs_differently_do_not_share_a_cache_entry(tmp_path):
    """Same nodes, outputs pointing at different nodes: the second model got the first's mapping."""
    x = np.ones((2, 3))
    for second in (False, True):
        g = _swapped_outputs(second)
        got = gn.compile(g, target="cpu", dtype="float64", cache_dir=tmp_path).forward({"x": x})
        expect = gn.compile(g, target="reference", dtype="float64").forward({"x": x})
        for k in expect:
            np.testing.assert_allclose(got[k], expect[k], rtol=1e-12, err_msg=k)


@pytest.mark.parametrize("target", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_inputs_and_constant_arrays_can_be_outputs(target):
    g = gn.Graph("leaf_outputs")
    x = g.input("x", (None, 2))
    g.output("x", x)
    g.output("c", g.constant(np.array([1.0, 2.0])))
    g.output("t", gn.tanh(x))
    feeds = {"x": np.array([[0.5, -1.0], [2.0, 3.0]])}
    got = gn.compile(g, target=target, dtype="float64").forward(feeds)
    expect = gn.compile(g, target="reference", dtype="float64").forward(feeds)
    for k in expect:
        np.testing.assert_allclose(got[k], expect[k], rtol=1e-12, err_msg=k)
    assert got["c"].shape == (2,) and got["x"].shape == (2, 2)


def test_node_names_are_text_in_pictures():
    """The graphviz library passes a value that looks like <...> unquoted, as an HTML label:
    a node name could add nodes to the picture; NUL and <b> made the renderer fail."""
    g = gn.Graph("<g>")
    x = g.input("x", (None, 2))
    t = gn.tanh(x, name='<x>]; evil [label="INJECTED" shape=box]; n1 [tooltip=<y>')
    u = gn.sigmoid(t, name="x\x00y\nz")
    v = gn.relu(u, name="<b>bold</b>")
    picture = gn.render(v)
    svg = picture.svg()
    assert "<title>evil</title>" not in svg and "<b>bold</b>" not in svg
    assert "&lt;b&gt;bold&lt;/b&gt;" in svg                       # shown as text
    assert "x\\x00y\\nz" in svg                                     # control characters as escapes
    assert svg.count("<g id=\"node") == 4                           # x and three ops, nothing injected


def test_nodes_of_another_graph_cannot_be_outputs_or_saved(tmp_path):
    g1, g2 = gn.Graph("first", seed=1), gn.Graph("second", seed=2)
    h1 = gn.dense(g1.input("x", (None, 2)), 1, name="d")
    h2 = gn.dense(g2.input("x", (None, 2)), 1, name="d")
    with pytest.raises(gn.GraphMixError, match="'second'.*'first'"):
        g1.output("o", h2)
    with pytest.raises(gn.ArgumentError, match="two different output nodes are named 'd/z'"):
        gn.evaluate([h1, h2], {"x": np.ones((1, 2))})   # one of the two values was dropped
    with pytest.raises(gn.GraphMixError, match="save"):
        gn.save(g1, tmp_path / "mix", loss=gn.mean(h2))
    assert not list(tmp_path.iterdir())
