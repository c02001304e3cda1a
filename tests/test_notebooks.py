"""Execute the notebooks end to end in their small configuration, as CI does.

Each notebook runs in a fresh ``ipykernel`` started from this interpreter
(``sys.executable``, through a kernelspec written into a temporary folder, so that the
kernel sees the same venv and the same ``corrsteer`` build), with
``CORRSTEER_NOTEBOOK_SMALL=1`` and the repository root as working directory. The
notebooks are executed in memory: the files in ``notebooks/`` are not rewritten.

Beyond "no cell raised", each test reads the printed outputs back and checks the numbers
that matter: the model's sanity check, the SAE's held-out reconstruction, the C core
against its NumPy twin, that the evaluation tables and plots were produced, and that the
walkthrough's steering raised the food rate (significantly) on its test openers.

Run:
    pytest tests/test_notebooks.py -q            # structure and kernel checks only (~5 s; slow is deselected)
    pytest tests/test_notebooks.py -q -m slow    # both notebooks, small configuration (984 s for the two at load 8-9 on 2 cores)
Measured (2 shared CPU cores, float32): see the first cell of each notebook.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 900  # one cell; collection on a loaded 2-core machine takes ~2 min
KERNEL = "corrsteer-test-python"

NAMES = ("walkthrough", "debiasing")
ALLOWED_IMPORTS = {"corrsteer", "numpy", "torch", "transformers", "IPython", "os", "time", "platform",
                   "warnings", "tempfile", "pathlib", "sys"}  # the notebooks only call the package
MAX_OUTPUT_BYTES = 200_000  # stored outputs stay short (two small PNGs at most)


def _require_model_and_data() -> None:
    """Skip (with the reason) when the embedded model or the shared datasets are not installed."""
    from corrsteer.errors import CorrsteerError
    from corrsteer.models.embedded import EMBEDDED, locate_parts
    from corrsteer.tasks.data import dataset_dir

    try:
        locate_parts(EMBEDDED["gemma-3-270m"])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")
    for name, marker in (("sst2", "dev.tsv"), ("emgsd", "emgsd_sample.csv"), ("bbq", "*.jsonl")):
        try:
            dataset_dir(name, marker)
        except CorrsteerError as exc:
            pytest.skip(f"shared dataset {name!r} not found: {exc}")


def run_notebook(nb: Any, tmp_path: Path, label: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Execute ``nb`` in place in a kernel on ``sys.executable``, cwd = the repository root.

    The kernelspec is written under ``tmp_path`` and found through ``JUPYTER_PATH``, so
    that nbclient owns the kernel manager and shuts the kernel and its sockets down. An
    ``import sys; print(sys.executable)`` cell is appended so the caller can check which
    interpreter ran it. A failing cell fails the test with the cell's source and traceback.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel interpreter:', sys.executable)"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "corrsteer tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        pytest.fail(f"{label}: a cell failed:\n{exc}", pytrace=False)
    return nb


def read_notebook(name: str) -> Any:
    """``notebooks/<name>.ipynb``, read and validated against the nbformat schema."""
    import nbformat

    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``notebooks/<name>.ipynb`` (an in-memory copy) and return the executed notebook.

    With ``CORRSTEER_NOTEBOOK_WRITE=<dir>`` the executed notebook (without the appended
    interpreter cell) is also written to ``<dir>/<name>.ipynb``, so that one run both tests
    the notebook and gives outputs that can be stored; ``notebooks/`` itself is never written.
    """
    import copy
    import os

    import nbformat

    nb = run_notebook(read_notebook(name), tmp_path, f"{name}.ipynb in the small configuration", monkeypatch)
    out_dir = os.environ.get("CORRSTEER_NOTEBOOK_WRITE")
    if out_dir:
        stored = copy.deepcopy(nb)
        stored.cells.pop()  # the interpreter cell run_notebook appended
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        nbformat.write(stored, Path(out_dir) / f"{name}.ipynb")
    return nb


def outputs(cell: Any) -> str:
    """Everything a code cell printed or displayed as text (stream, plain text, markdown)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            parts.append(data.get("text/markdown", data.get("text/plain", "")))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "".join(parts)


def all_text(nb: Any) -> str:
    return "\n".join(outputs(c) for c in nb.cells if c.cell_type == "code")


def number(pattern: str, text: str) -> float:
    """The float captured by ``pattern`` in ``text``; fails naming the pattern when absent."""
    match = re.search(pattern, text)
    assert match, f"no output matches {pattern!r}; outputs were:\n{text[-3000:]}"
    return float(match.group(1))


@pytest.fixture
def small_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits this environment: the small configuration, no progress bars."""
    monkeypatch.setenv("CORRSTEER_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    _require_model_and_data()


def check_common(nb: Any, text: str) -> None:
    assert f"kernel interpreter: {sys.executable}" in text, "the kernel did not run on this interpreter"
    assert "configuration: small" in text, "the parameters cell did not pick up CORRSTEER_NOTEBOOK_SMALL=1"
    assert re.search(r"ok=True", text), "the model's sanity check failed"
    assert re.search(r"total runtime: \d+ s \(small configuration", text)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                assert "Traceback" not in out["text"], f"a cell wrote a traceback to stderr:\n{out['text']}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_short_and_only_calls_the_package(name):
    import ast

    nb = read_notebook(name)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "Runtime and hardware" in first_md.source, f"{name}: the first cell must state runtime and hardware"
    assert "CORRSTEER_NOTEBOOK_SMALL" in first_code.source, f"{name}: the parameters cell must read the switch"
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] not in ALLOWED_IMPORTS]
            assert not bad, f"{name}: code cell {i} imports {bad}; notebooks only call corrsteer"
        assert not [o for o in cell.get("outputs", []) if o.get("output_type") == "error"], \
            f"{name}: code cell {i} is stored with an error output; re-execute the notebook"
    size = len(json.dumps([c.get("outputs", []) for c in nb.cells]))
    assert size < MAX_OUTPUT_BYTES, f"{name}: stored outputs are {size} bytes; keep them short"


def test_kernel_runs_on_this_interpreter_and_cell_errors_fail(tmp_path, monkeypatch):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import os\nprint('small:', os.environ.get('CORRSTEER_NOTEBOOK_SMALL'))"))
    done = run_notebook(nb, tmp_path / "ok", "trivial notebook", monkeypatch)
    assert f"kernel interpreter: {sys.executable}" in all_text(done)
    bad = nbformat.v4.new_notebook()
    bad.cells.append(nbformat.v4.new_code_cell("raise ValueError('boom from the notebook')"))
    with pytest.raises(pytest.fail.Exception, match="boom from the notebook"):
        run_notebook(bad, tmp_path / "bad", "failing notebook", monkeypatch)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_walkthrough_runs_small_and_core_matches_reference(small_env, tmp_path, monkeypatch):
    nb = execute("walkthrough", tmp_path, monkeypatch)
    text = all_text(nb)
    check_common(nb, text)
    # The SAE reconstructs held-out text: L0 equals k for a TopK SAE and the EV is well above 0.
    match = re.search(r"^\s*6\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(-?[\d.]+)\s", text, re.M)
    assert match, f"no SAE sanity row for layer 6 in:\n{text[-3000:]}"
    d_sae, l0, ev = int(match.group(1)), float(match.group(3)), float(match.group(4))
    assert 0 < l0 <= d_sae and ev > 0.3, f"SAE sanity: L0={l0}, EV={ev} (d_sae={d_sae})"
    pooled = number(r"encode_pooled max rel diff = ([\d.e+-]+)", text)
    r_diff = number(r"r max abs diff = ([\d.e+-]+)", text)
    assert pooled < 1e-4 and r_diff < 1e-6, f"C core vs reference: pooled {pooled:.2e}, r {r_diff:.2e}"
    assert "C core matches the reference: True" in text
    assert re.search(r"\| all \| 48 \| [\d.]+ \| \[", text), "no baseline table over the 48 test samples"
    assert re.search(r"collected 96 samples at layers \[3, 6, 9, 12\]", text)
    assert "| prompt (end) | scale 0 | scale 0.5 | scale 1 | scale 2 |" in text
    assert re.search(r"\| food / all \| [\d.]+ \| [\d.]+ \| [+-][\d.]+ \| \[", text), "no evaluation row"
    # The point of the walkthrough: steering moves the reward. Small configuration, measured on 2 shared
    # cores: 0.188 -> 0.625 on the 48 test openers (21 up, 0 down, McNemar p ~1e-6).
    unsteered = number(r"food rate: unsteered ([\d.]+) -> steered", text)
    steered = number(r"food rate: unsteered [\d.]+ -> steered ([\d.]+)", text)
    assert steered > unsteered, f"steering did not raise the food rate: {unsteered:.3f} -> {steered:.3f}"
    assert re.search(r"^verdict: improved by \+", text, re.M), \
        f"the food-rate increase is not significant ({unsteered:.3f} -> {steered:.3f}):\n{text[-3000:]}"
    assert len(re.findall(r"^example \d: ", text, re.M)) == 2, "expected two example continuation pairs"


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_debiasing_runs_small_with_tables_and_plots(small_env, tmp_path, monkeypatch):
    nb = execute("debiasing", tmp_path, monkeypatch)
    text = all_text(nb)
    check_common(nb, text)
    for label in ("stereotype", "neutral", "unrelated"):
        assert re.search(rf"^\| {label} \| 6 \| \d+ \| [+-][\d.]+ \| [\d.]+ \|", text, re.M), f"no label row {label}"
    assert re.search(r"layer  6: \+ neutral feature \d+ ", text), "no added neutral feature"
    assert re.search(r"layer  6: - stereotype feature \d+ ", text), "no subtracted stereotype feature"
    for task in ("bbq_ambig", "bbq_disambig", "emgsd"):
        assert re.search(rf"^{task}: n=40, accuracy [\d.]+ -> [\d.]+: ", text, re.M), f"no {task} summary"
        assert re.search(rf"\| {task} \| all \| 40 \| [\d.]+ \[[\d.]+, [\d.]+\] \|", text), f"no {task} row"
    assert re.search(r"\| bbq_ambig \| all \| 40 \|.*\| [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\] \|", text), \
        "no BBQ bias score with an interval"
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 2, f"expected one bias point plot per BBQ condition, got {len(pngs)}"
