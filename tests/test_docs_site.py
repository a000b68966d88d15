"""The documentation site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``.

Strict mode turns every warning into a failure: a broken link or anchor between pages, a page
left out of the navigation, an API entry (``::: graphnn.X``) that no longer resolves.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LECTURE_EXAMPLES = ["activations", "linear_collapse", "regression_net", "classification_net",
                    "softmax_classifier", "deep_network", "network_as_layer", "autodiff_sigmoid",
                    "custom_layer", "regularization", "conv_net", "gpu"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, (
        "`mkdocs build --strict` failed (pip install -e \".[docs]\" for mkdocs-material and "
        f"mkdocstrings[python]):\n{result.stdout}\n{result.stderr}")
    return out


def _page(site, path):
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_every_page_is_built(site):
    for path in ["", "tutorial", "core", "compiler", "training", "rendering", "cuda", "file-format",
                 "performance", "api", "api/graphnn", "api/ops", "api/nn", "api/train", "api/errors"]:
        assert (site / path / "index.html").is_file(), path


def test_api_reference_documents_the_public_names(site):
    expected = {
        "api/graphnn": ["graphnn.Graph", "graphnn.compile", "graphnn.Model", "graphnn.derive.autodiff.derive",
                        "graphnn.evaluate", "graphnn.loss_and_gradients", "graphnn.check_grad",
                        "graphnn.render.render", "graphnn.save", "graphnn.load", "graphnn.lint.lint"],
        "api/ops": ["graphnn.ops.registry.elementwise", "graphnn.ops.registry.index_op",
                    "graphnn.ops.primitives.Sigmoid"],
        "api/nn": ["graphnn.nn.dense", "graphnn.nn.Dense", "graphnn.nn.as_layer"],
        "api/train": ["graphnn.train.fit.fit", "graphnn.train.Adam", "graphnn.train.SGD"],
        "api/errors": ["graphnn.errors.GraphnnError", "graphnn.errors.FeedError"],
    }
    for path, names in expected.items():
        ids = set(re.findall(r'id="([^"]+)"', _page(site, path)))
        assert not set(names) - ids, (path, set(names) - ids)


def test_docstring_markup_is_rendered(site):
    for path in ["api/graphnn", "api/ops", "api/nn", "api/train", "api/errors"]:
        html = _page(site, path)
        # Sphinx roles show as code (docs/api/hooks.py), not as ":class:`Model`"
        assert not re.search(r":(class|func|meth|mod|attr|exc):<code>", html), path
        # doctest examples are code blocks (docs/api/griffe_doctest.py), not nested ">" quotes
        assert "<blockquote" not in html, path
    html = _page(site, "api/graphnn")
    assert '<span class="gp">&gt;&gt;&gt; </span>' in html
    assert 'href="#graphnn.Model"><code>Model</code>' in html   # :class:`~graphnn.Model` links
    assert "<code>&lt;grad, v&gt;</code>" in html     # check_grad's docstring, not a raw HTML tag


def test_tutorial_has_one_section_per_lecture_example(site):
    html = _page(site, "tutorial")
    for name in LECTURE_EXAMPLES:
        assert f"examples/{name}.py" in html, name
    assert "TUTORIAL-PLACEHOLDER" not in html, "a tutorial section is still a placeholder"
    # every picture the tutorial shows is in the built site
    pictures = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(pictures) >= 12
    for src in pictures:
        assert (site / "tutorial" / src).resolve().is_file(), src
