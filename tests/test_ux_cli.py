"""Issue 14, a user's first hour: op names that clash with built-ins, the CLI, the docs' claims."""
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn import cli
from graphnn.render import backend

ROOT = Path(__file__).resolve().parent.parent


# -- item 7: a user op may not silently take a built-in's name ------------------------------

def test_elementwise_op_with_a_builtin_name_is_refused():
    builtin = gn.REGISTRY["swish"]
    with pytest.raises(gn.errors.OpDeclarationError, match=r"op 'swish'.*built-in.*replace=True"):
        @gn.elementwise
        def swish(x):
            return x * gn.Sigmoid(x)
    assert gn.REGISTRY["swish"] is builtin
    with pytest.raises(gn.errors.OpDeclarationError, match="'relu'"):
        gn.elementwise(name="relu")(lambda x: sp.Max(x, 0))
    assert gn.REGISTRY["relu"] is gn.BUILTINS["relu"]


def test_index_op_with_a_builtin_name_is_refused():
    with pytest.raises(gn.errors.OpDeclarationError, match=r"op 'matmul'.*replace=True"):
        @gn.index_op
        def matmul(x):
            n, i = gn.indices("n i")
            return (n,), gn.IndexSum(x[n, i], i)
    assert gn.REGISTRY["matmul"] is gn.BUILTINS["matmul"]


def test_replace_true_replaces_a_builtin_on_purpose():
    @gn.elementwise(replace=True)
    def swish(x):
        return 2 * x * gn.Sigmoid(x)
    assert gn.REGISTRY["swish"] is swish and gn.BUILTINS["swish"] is not swish

    @gn.index_op(name="sum_to", replace=True)
    def my_sum_to(x):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(x[n, i], i)
    assert gn.REGISTRY["sum_to"] is my_sum_to


def test_replace_must_be_a_bool():
    with pytest.raises(gn.errors.OpDeclarationError, match="replace= must be True or False"):
        gn.elementwise(name="tanh", replace="yes")(lambda x: x)


def test_redeclaring_a_user_op_is_allowed():
    """A notebook cell re-run declares the same user op again: the latest declaration wins."""
    @gn.elementwise
    def ux_cube(x):
        return x ** 3
    first = ux_cube

    @gn.elementwise
    def ux_cube(x):  # noqa: F811
        return x ** 3 + x
    assert gn.REGISTRY["ux_cube"] is ux_cube and ux_cube is not first


def test_readme_op_examples_declare_no_builtin_name():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## One declaration per op", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace = {"gn": gn, "sp": sp}
    for block in blocks:
        exec(block, namespace)   # a clash with a built-in raises OpDeclarationError
    assert isinstance(namespace["my_swish"], gn.ElementwiseOp)
    assert isinstance(namespace["row_sums"], gn.IndexOp)


# -- item 8: the command line -----------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"graphnn {gn.__version__}"


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out
    assert "graphnn demo" in out and "graphnn render" in out and "--version" in out


def test_demo_help_describes_it_and_gives_the_default_out(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "train" in out and "gradient" in out
    assert "(default: graphnn-demo)" in " ".join(out.split())


def test_render_help_offers_feed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--feed DATA.npz" in out and "np.savez" in out


def _feed_file(tmp_path):
    X, Y = gn.lecture.noisy_sine(8)
    path = tmp_path / "data.npz"
    np.savez(path, x=X, y=Y)
    return path


def test_render_feed_puts_values_on_the_delta_flow(tmp_path, capsys):
    out = tmp_path / "flow.dot"
    code = cli.main(["render", "graphnn.lecture:regression_net", "--out", str(out), "--deltas",
                     "--feed", str(_feed_file(tmp_path))])
    assert code == 0, capsys.readouterr().err
    source = out.read_text()
    assert "batch 8" in source and "loss 0.285" in source      # evaluated on the file's 8 rows
    assert "‖δ‖" in source


def test_render_feed_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(3))
    for path in (bad, one, tmp_path / "missing.npz"):
        code = cli.main(["render", "graphnn.lecture:regression_net", "--out", str(tmp_path / "f.dot"),
                         "--deltas", "--feed", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and path.name in err and "Traceback" not in err, err


def test_png_without_dot_fails_before_the_graph_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(backend, "system_dot", lambda: None)
    marker = tmp_path / "built"
    module = tmp_path / "png_check_net.py"     # a name no other test imports (sys.modules caches)
    module.write_text(f"def build():\n    open({str(marker)!r}, 'w').close()\n"
                      f"    import graphnn\n    return graphnn.lecture.regression_net()\n")
    for ext in ("png", "pdf"):
        code = cli.main(["render", f"{module}:build", "--out", str(tmp_path / f"net.{ext}")])
        err = capsys.readouterr().err
        assert code == 2 and f"{ext.upper()} needs the system Graphviz `dot`" in err
        assert "apt-get install graphviz" in err and ".svg" in err
    assert not marker.exists()
    # SVG still works without dot, and builds the graph
    assert cli.main(["render", f"{module}:build", "--out", str(tmp_path / "net.svg")]) == 0
    assert marker.exists()


# -- item 8: the docs ---------------------------------------------------------------------

def test_rendering_md_names_only_what_exists_under_those_names():
    """``graphnn.render`` is the function: the page must not call ``graphnn.render.backend_name()``."""
    page = (ROOT / "docs" / "rendering.md").read_text()
    assert not re.search(r"(graphnn|gn)\.render\.(backend_name|RenderFormatError|system_dot)", page)
    assert "from graphnn.render import RenderFormatError, backend_name" in page


def test_performance_md_cites_only_files_in_the_repository():
    page = (ROOT / "docs" / "performance.md").read_text()
    cited = set(re.findall(r"`([\w./-]+/[\w.-]+\.(?:py|md))`", page))
    cited |= {"docs/" + m for m in re.findall(r"\]\(([\w./-]+\.md)\)", page)}
    assert cited
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert not missing, f"docs/performance.md cites {missing}, which are not in the repository"
