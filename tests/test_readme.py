"""The README's first snippet is ``examples/quickstart.py``, verbatim, and it does what the README shows.

The fast test checks the text; the slow one runs the script on the embedded model with the
default SAEs (trained on first use, then cached) and checks the effect it prints: the food
rate goes up, significantly. ~7 CPU-minutes on a 2-core machine with the SAEs cached.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "quickstart.py"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_first_snippet_is_the_quickstart_script() -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no ```python block"
    assert blocks[0] == SCRIPT.read_text(), "README's first snippet and examples/quickstart.py differ: copy one onto the other"



def test_readme_register_task_snippet_runs() -> None:
    """The README's custom-task snippet, as written, registers a task the library then serves."""
    block = next((b for b in _python_blocks((ROOT / "README.md").read_text()) if "register_task(" in b), None)
    assert block is not None, "README.md lost its register_task snippet"
    check = ("\nimport corrsteer\nt = corrsteer.get_task('colour')\ns = t.samples('test')[0]\n"
             "assert t.reward(s, ' saw a red kite') == 1 and t.reward(s, ' sat down') == 0\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", block + check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-4000:]

@pytest.mark.slow
@pytest.mark.timeout(2400)  # trains the default SAEs first when the cache is cold
def test_quickstart_steers_towards_food() -> None:
    pytest.importorskip("torch")
    from corrsteer.errors import CorrsteerError
    from corrsteer.models.embedded import EMBEDDED, locate_parts

    try:
        locate_parts(EMBEDDED["gemma-3-270m"])
    except CorrsteerError as exc:
        pytest.skip(f"embedded model not installed: {exc}")
    out = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-4000:]
    m = re.search(r"unsteered ([\d.]+)% -> steered ([\d.]+)% \(n=64\): ([+-][\d.]+) pp, 95% CI \[([+-][\d.]+), "
                  r"([+-][\d.]+)\], McNemar p=(\S+),", out.stdout)
    assert m, out.stdout
    base, steered, delta, lo = (float(m.group(i)) for i in (1, 2, 3, 4))
    assert steered > base and lo > 0 and float(m.group(6)) < 0.01, out.stdout
    assert re.search(r"corrsteer selection \(all\): L3 \+#\d+", out.stdout), out.stdout
