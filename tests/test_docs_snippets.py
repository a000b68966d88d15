"""Every Python snippet of README.md and docs/, and every documented `graphnn` command, runs.

Pages that are doctested whole (tests/test_docs.py, test_train_docs.py, test_render.py) have
their ``>>>`` blocks run there; here every other ``python`` block runs, in page order, each
page in its own process (snippets declare ops, which must not leak into other tests) and its
own empty folder. A block preceded by ``<!-- snippet: not run: REASON -->`` is skipped here
with that reason shown; ``<!-- snippet: gpu -->`` runs only where a GPU is present.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphnn import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCTESTED = {"core.md", "compiler.md", "training.md", "rendering.md"}   # their >>> blocks run elsewhere
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->")
COVERED_ELSEWHERE = {   # commands run by another test (they take long); that test must exist
    "demo": ("tests/test_cli.py", "def test_demo_builds_derives_and_checks"),
}


def blocks(page, languages):
    """[(line, language, text, mark)] of the fenced blocks of ``page`` in ``languages``."""
    out, lines = [], page.read_text().splitlines()
    k = 0
    while k < len(lines):
        match = FENCE.match(lines[k])
        if match and match.group(1):
            start, body = k + 1, []
            k += 1
            while k < len(lines) and not lines[k].startswith("```"):
                body.append(lines[k])
                k += 1
            mark = MARK.search(lines[start - 2]) if start >= 2 else None
            if match.group(1) in languages:
                out.append((start, match.group(1), "\n".join(body) + "\n", mark.group(1) if mark else None))
        k += 1
    return out


def python_blocks(page):
    found = blocks(page, {"python", "py"})
    if page.name in DOCTESTED:
        found = [b for b in found if ">>>" not in b[2]]
    return found


RUNNER = textwrap.dedent('''
    import doctest, json, sys, traceback
    page, blocks = sys.argv[1], json.loads(sys.stdin.read())
    globs, results = {"__name__": "__snippets__"}, []
    for line, text in blocks:
        try:
            if ">>>" in text:
                test = doctest.DocTestParser().get_doctest(text, globs, f"{page}:{line}", page, line)
                out = []
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
                runner.run(test, out=out.append, clear_globs=False)
                error = "".join(out) if runner.failures else None
            else:
                exec(compile(text, f"{page}:{line}", "exec"), globs)
                error = None
        except BaseException:
            error = traceback.format_exc(limit=-3)
        results.append([line, error])
        if error:
            break
    print("SNIPPETS " + json.dumps(results))
''')


def _gpu_present():
    """A real GPU the tests may use (GRAPHNN_TEST_REAL_GPU=1, see conftest.py); not the simulator."""
    if os.environ.get("GRAPHNN_TEST_REAL_GPU") != "1":
        return False
    from numba import cuda
    return bool(cuda.is_available())


def _page_cases():
    cases = []
    for page in PAGES:
        found = python_blocks(page)
        if found:
            cases.append(pytest.param(page, found, id=page.name))
    return cases


def _skipped(mark):
    """Why a block does not run here, or None."""
    if mark and mark.startswith("not run"):
        return mark
    if mark and mark.startswith("gpu") and not _gpu_present():
        return f"needs a GPU, none here ({mark})"
    return None


@pytest.mark.parametrize("page,found", _page_cases())
def test_every_python_snippet_of_the_page_runs(page, found, tmp_path):
    run = [[line, text] for line, _, text, mark in found if _skipped(mark) is None]
    if not run:
        pytest.skip(f"{page.name}: every block is marked (see test_marked_snippets)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", RUNNER, page.name], input=json.dumps(run),
                            capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    report = next((ln for ln in result.stdout.splitlines() if ln.startswith("SNIPPETS ")), None)
    assert report is not None, result.stderr[-3000:]
    outcomes = json.loads(report[len("SNIPPETS "):])
    failed = [(line, error) for line, error in outcomes if error]
    assert not failed, f"{page.name}:{failed[0][0]} failed:\n{failed[0][1]}"
    assert len(outcomes) == len(run)


MARKED = [pytest.param(mark, id=f"{page.name}:{line}") for page in PAGES
          for line, _, _, mark in python_blocks(page) if mark]


@pytest.mark.parametrize("mark", MARKED)
def test_marked_snippets(mark):
    """A block marked in the page: run above where it can be, else shown here as a skip."""
    assert mark.startswith(("not run:", "gpu")), f"unknown snippet mark {mark!r}"
    reason = _skipped(mark)
    if reason:
        pytest.skip(reason)


def _commands():
    """Every `graphnn ...` line of a shell block, as (page:line, argv)."""
    found = []
    for page in PAGES:
        for line, _, text, _ in blocks(page, {"bash", "sh", "shell", "console"}):
            for k, command in enumerate(text.splitlines()):
                command = command.strip().removeprefix("$ ")
                for part in command.split("&&"):
                    part = part.strip()
                    if part.startswith("graphnn"):
                        argv = shlex.split(part, comments=True)[1:]
                        found.append((f"{page.name}:{line + k}", argv))
    return found


MYNETS = '''
import graphnn as gn


def build():
    """A small classifier, as the docs' mynets.py: 4 features, 8 hidden units, 3 classes."""
    net = gn.Graph("mynet")
    x, y = net.input("x", (None, 4)), net.input("y", (None, 3))
    logits = net.output("logits", gn.dense(gn.dense(x, 8, activation="relu"), 3))
    return gn.softmax_cross_entropy(logits, y)
'''


@pytest.mark.parametrize("where,argv", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_command_runs(where, argv, tmp_path, monkeypatch):
    if argv and argv[0] in COVERED_ELSEWHERE:
        path, test = COVERED_ELSEWHERE[argv[0]]
        assert test in (ROOT / path).read_text()
        pytest.skip(f"{where}: `graphnn {argv[0]}` runs in {path}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mynets.py").write_text(MYNETS)
    if any(a.endswith((".png", ".pdf")) for a in argv):
        import shutil
        if shutil.which("dot") is None:
            pytest.skip(f"{where}: PNG/PDF need the system Graphviz `dot` (not installed here)")
    code = cli.main(argv)
    assert code in (0, None), f"{where}: graphnn {' '.join(argv)} exited with {code}"
    outs = [argv[k + 1] for k, a in enumerate(argv[:-1]) if a == "--out"]
    for out in outs:
        assert (tmp_path / out).exists(), f"{where}: {out} was not written"


def test_the_commands_and_snippets_were_found():
    """The parsers above see the docs (a changed fence style would make the tests above vacuous)."""
    assert len(_commands()) >= 4
    assert sum(len(python_blocks(p)) for p in PAGES) >= 8
