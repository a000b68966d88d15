"""examples/lecture.ipynb runs from top to bottom (nbclient, a fresh Python kernel) with no cell error."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow     # runs the whole notebook in a kernel: about 20-40 s
def test_the_lecture_notebook_runs_without_errors(monkeypatch):
    notebook = nbformat.read(EXAMPLES / "lecture.ipynb", as_version=4)
    env_path = os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", env_path)      # the kernel imports graphnn from this checkout
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)   # as a user runs it: the notebook decides
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()            # raises CellExecutionError, with the cell and its traceback
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    results = [o["data"].get("text/plain", "") for o in outputs if o.get("output_type") == "execute_result"]
    assert "True" in results, "explain's sum over paths is not the gradient"
    assert "CUDA simulator" in text or "GPU" in text
    images = sum(1 for o in outputs if "image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {}))
    assert images >= 10, f"only {images} pictures shown"
