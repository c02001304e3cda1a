"""Print the README's result tables from the runs that scripts/results.sh wrote (mean and spread over seeds).

    python scripts/summarize.py [--runs runs]

Each table row names the command that produced it (the `command` recorded in its results.json
or controls.json); seeds are summarised as mean ± standard deviation, with every seed's value
beside it, so a reader sees both the average and how much it moves.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _seed_of(path: Path) -> int:
    m = re.search(r"seed(\d+)", path.parent.name)
    return int(m.group(1)) if m else -1


def _ms(values: list[float], pp: bool = True, signed: bool = False) -> str:
    k = 100 if pp else 1
    vals = [k * v for v in values]
    fmt = "{:+.1f}" if signed else "{:.1f}"
    mean = fmt.format(statistics.mean(vals))
    spread = f" ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else ""
    return f"{mean}{spread} ({', '.join(fmt.format(v) for v in vals)})"


def _p(values: list[float]) -> str:
    return ", ".join("<0.001" if p < 0.001 else f"{p:.2g}" for p in values)


def _command(doc: dict) -> str:
    cmd = doc.get("command") or ""
    return re.sub(r"--seed \d+", "--seed S", re.sub(r"seed\d+", "seedS", cmd))


def evidence(root: Path, folder: str = "evidence") -> list[str]:
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for path in sorted(root.glob(f"{folder}/*/controls.json")):
        groups[path.parent.name.rsplit("-seed", 1)[0]].append((_seed_of(path), _load(path)))
    out = ["| task | condition | score % | Δ pp | p per seed | degenerate % | seeds |", "|---|---|---|---|---|---|---|"]
    for task, runs in groups.items():
        runs.sort()
        docs = [d for _, d in runs]
        seeds = ",".join(str(s) for s, _ in runs)
        base = [d["rows"]["corrsteer"]["baseline"]["score"] for d in docs]
        deg = [d["fluency"]["unsteered"]["degenerate"] for d in docs]
        out.append(f"| {task} | unsteered | {_ms(base)} | | | {_ms(deg)} | {seeds} |")
        cs = [d["rows"]["corrsteer"] for d in docs]
        out.append(f"| {task} | **CorrSteer-A** | {_ms([r['steered']['score'] for r in cs])} | "
                   f"{_ms([r['delta'] for r in cs], signed=True)} | McNemar {_p([r['mcnemar_p'] for r in cs])} | "
                   f"{_ms([r['fluency']['degenerate'] for r in cs])} | {seeds} |")
        for m in ("random", "shuffled"):
            if all(m in d.get("summaries", {}) for d in docs):
                ss = [d["summaries"][m] for d in docs]
                rows = [[r for n, r in d["rows"].items() if n.startswith(f"{m} #")] for d in docs]
                deg = [statistics.mean(r["fluency"]["degenerate"] for r in rs) for rs in rows]
                out.append(f"| {task} | {m} (mean of {ss[0]['n_draws']} draws) | "
                           f"{_ms([s['steered']['score'] for s in ss])} | {_ms([s['delta'] for s in ss], signed=True)} "
                           f"| sign-flip {_p([s['p'] for s in ss])} | {_ms(deg)} | {seeds} |")
        for m in ("random", "shuffled"):
            if all(m in d.get("versus", {}) for d in docs):
                vs = [d["versus"][m] for d in docs]
                out.append(f"| {task} | CorrSteer − {m} | | {_ms([v['delta'] for v in vs], signed=True)} | "
                           f"sign-flip {_p([v['p'] for v in vs])} | | {seeds} |")
        out.append(f"| {task} | features kept, per seed | {'; '.join(r['steers'] for r in cs)} | | | | |")
        out.append(f"| {task} | command | `{_command(docs[0])}` | | | | |")
    return out


def runs_table(root: Path, folder: str, label: str) -> list[str]:
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for path in sorted(root.glob(f"{folder}/*/results.json")):
        groups[path.parent.name.rsplit("-seed", 1)[0]].append((_seed_of(path), _load(path)))
    out = [f"| {label} | baseline % | steered % | Δ pp | McNemar p per seed | features kept per seed | command |",
           "|---|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        runs.sort()
        docs = [d for _, d in runs]
        kept = "; ".join(", ".join(f"L{f['layer']}{f['sign']}#{f['index']}" for f in d["features"]) or "none"
                         for d in docs)
        scale = ""
        if docs[0].get("selection", {}).get("scale_curve"):
            scale = " (scale " + ", ".join(f"{d['selection']['scale']:g}" for d in docs) + ")"
        out.append(f"| {name}{scale} | {_ms([d['baseline']['score'] for d in docs])} | "
                   f"{_ms([d['steered']['score'] for d in docs])} | {_ms([d['delta'] for d in docs], signed=True)} | "
                   f"{_p([d['mcnemar_p'] for d in docs])} | {kept} | `{_command(docs[0])}` |")
    return out


def controls_rows(root: Path, folder: str, conditions: tuple[str, ...]) -> list[str]:
    """One row per run and condition of the controls.json files under ``folder`` (the sign runs)."""
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for path in sorted(root.glob(f"{folder}/*/controls.json")):
        doc = _load(path)
        for name in conditions:
            if name in doc["rows"]:
                groups[(path.parent.name.rsplit("-seed", 1)[0], name)].append((_seed_of(path), doc))
    out = ["| run | condition | baseline % | steered % | Δ pp | McNemar p per seed | degenerate % | steers (per seed) "
           "| command |", "|---|---|---|---|---|---|---|---|---|"]
    for (run, name), runs in groups.items():
        runs.sort()
        rows = [d["rows"][name] for _, d in runs]
        steers = "; ".join(r.get("steers", "") for r in rows)
        out.append(f"| {run} | {name} | {_ms([r['baseline']['score'] for r in rows])} | "
                   f"{_ms([r['steered']['score'] for r in rows])} | {_ms([r['delta'] for r in rows], signed=True)} | "
                   f"{_p([r['mcnemar_p'] for r in rows])} | {_ms([r['fluency']['degenerate'] for r in rows])} | "
                   f"{steers} | `{_command(runs[0][1])}` |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs", help="the runs folder (runs)")
    root = Path(ap.parse_args().runs)
    sections = [("Evidence: generation-level rewards, with controls", evidence(root)),
                ("Evidence with the larger SAEs (--sae default-16k)", evidence(root, "evidence16k")),
                ("Benchmarks", runs_table(root, "benchmarks", "task / mode")),
                ("Sign of negative features, and the strength on test",
                 controls_rows(root, "sign", ("negative", "scale-0.5", "corrsteer", "scale-2"))),
                ("Strength: --scale auto", runs_table(root, "strength", "task")),
                ("SAE width: default vs default-8k at layers 3 and 6", controls_rows(root, "width", ("corrsteer",
                                                                                                    "random #0"))),
                ("XSTest, SmolLM2-135M-Instruct", runs_table(root, "xstest", "coefficient"))]
    for title, lines in sections:
        if len(lines) > 2:
            print(f"### {title}\n")
            print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
