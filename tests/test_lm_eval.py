"""The ``corrsteer`` model of lm-evaluation-harness, checked with the real ``lm-eval`` package (``lmeval`` extra).

On a tiny random model: the model args, the positions a log-likelihood request is steered at
(tied to corrsteer's own steered generation), generate_until, the ``corrsteer lm-eval``
command on a local task file. On the embedded Gemma 3 270M: unsteered scores equal lm-eval's
own ``hf`` model on the same local SST-2 task, steered scores differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from corrsteer.cli import main
from corrsteer.method.features import Selection

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is an optional extra: bash scripts/install_extras.sh lmeval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from corrsteer.integrations.lm_harness import CorrsteerLM, steered_span  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "scripts" / "lm_eval_tasks"
SST2 = ROOT.parent / "shared" / "datasets" / "sst2" / "test.tsv"


@pytest.fixture
def tiny_dir(tmp_path, tiny_llama, tiny_tokenizer) -> str:
    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def strong_selection(path: Path, d: int = 32, layers: tuple[int, ...] = (1, 2), norm: float = 4.0) -> str:
    """A saved selection of one random direction per layer, strong enough to change a tiny model's outputs."""
    rng = np.random.default_rng(7)
    dirs = {l: rng.standard_normal((1, d)).astype(np.float32) for l in layers}
    dirs = {l: v / np.linalg.norm(v) for l, v in dirs.items()}
    sel = Selection(mode="all", features=[], directions=dirs, coefficients={l: np.array([norm]) for l in layers},
                    sites={l: "resid_post" for l in layers}, meta={"model": "tiny"})
    return str(sel.save(path))


def make_lm(model_dir: str, **kw) -> CorrsteerLM:
    return CorrsteerLM(pretrained=model_dir, device="cpu", batch_size=4, **kw)


def test_corrsteer_is_registered_with_lm_eval() -> None:
    assert lm_eval.api.registry.get_model("corrsteer") is CorrsteerLM


def test_an_unknown_model_arg_is_refused_naming_the_known_ones(tiny_dir) -> None:
    with pytest.raises(ValueError, match="unknown model arg\\(s\\) selction for --model corrsteer; the known args "
                                         "are pretrained, selection, vector, scale, positions"):
        CorrsteerLM.create_from_arg_string(f"pretrained={tiny_dir},selction=x")
    with pytest.raises(ValueError, match="positions='prompt' is not valid"):
        make_lm(tiny_dir, positions="prompt")
    with pytest.raises(ValueError, match="give selection=DIR or vector=FILE.gguf, not both"):
        make_lm(tiny_dir, selection="a", vector="b.gguf")


def test_a_selection_for_another_model_is_refused_before_any_request(tmp_path, tiny_dir) -> None:
    with pytest.raises(ValueError, match="layer 7 is out of range; the model has 3 decoder layers"):
        make_lm(tiny_dir, selection=strong_selection(tmp_path / "deep", layers=(7,)))
    with pytest.raises(ValueError, match="shape \\(64,\\) but the model has d_model=32"):
        make_lm(tiny_dir, selection=strong_selection(tmp_path / "wide", d=64))
    wide = Selection.load(strong_selection(tmp_path / "wide", d=64)).to_gguf(tmp_path / "wide.gguf", "llama")
    with pytest.raises(ValueError, match="width 64 but the model has d_model=32"):
        make_lm(tiny_dir, vector=str(wide))


def test_a_control_vector_steers_as_the_selection_it_was_exported_from(tmp_path, tiny_dir) -> None:
    sel_dir = strong_selection(tmp_path / "sel")
    vec = Selection.load(sel_dir).to_gguf(tmp_path / "s.gguf", "llama")
    lm_sel, lm_vec = make_lm(tiny_dir, selection=sel_dir), make_lm(tiny_dir, vector=str(vec))
    reqs = [(None, lm_sel.tokenizer("2+2=")["input_ids"], [5, 6, 7])]
    assert lm_vec._loglikelihood_tokens(reqs)[0][0] == pytest.approx(lm_sel._loglikelihood_tokens(reqs)[0][0], abs=1e-5)


def test_steered_span_is_the_positions_that_score_the_continuation() -> None:
    # context of n = 3 tokens, continuation of T = 2: positions n-1 .. n+T-2 = 2, 3 of the row [c0 c1 c2 x0]
    assert steered_span([11, 12, 13], [21, 22], max_length=100) == ([11, 12, 13, 21], 2, 4)
    assert steered_span([11, 12, 13], [21, 22], max_length=100, positions="all") == ([11, 12, 13, 21], 0, 4)
    # left truncation (lm-eval's rule): the row keeps the last max_length tokens of context + continuation[:-1]
    assert steered_span([11, 12, 13], [21, 22], max_length=3) == ([12, 13, 21], 1, 3)


def test_loglikelihood_steers_exactly_the_positions_a_steered_generation_is_steered_at(tmp_path, tiny_dir) -> None:
    """Greedy steered generation of T tokens, then the log-likelihood of those T tokens given the prompt:
    the adapter must find them greedy and give the sum of the generation's own log-probabilities."""
    sel_dir = strong_selection(tmp_path / "sel")
    lm = make_lm(tiny_dir, selection=sel_dir)
    sel = Selection.load(sel_dir)
    for prompt in ("2+2=", "The cat sat on"):
        ctx = lm.tokenizer(prompt)["input_ids"]
        with torch.no_grad(), sel.apply(lm.model, positions="generation"):
            out = lm.model.generate(torch.tensor([ctx]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
        gen = out.sequences[0, len(ctx):].tolist()
        # raw logits (scores are processed: min_new_tokens masks EOS)
        want = sum(float(torch.log_softmax(s[0].double(), -1)[t]) for s, t in zip(out.logits, gen))
        (ll, greedy), = lm._loglikelihood_tokens([(None, ctx, gen)])
        assert greedy, prompt
        assert ll == pytest.approx(want, abs=1e-3), prompt
        (ll_all, _), = make_lm(tiny_dir, selection=sel_dir, positions="all")._loglikelihood_tokens([(None, ctx, gen)])
        (ll_base, _), = make_lm(tiny_dir)._loglikelihood_tokens([(None, ctx, gen)])
        assert abs(ll_all - ll) > 1e-2 and abs(ll_base - ll) > 1e-2, prompt


def test_steering_with_zero_vectors_reproduces_lm_eval_s_own_loglikelihood(tmp_path, tiny_dir) -> None:
    lm = make_lm(tiny_dir, selection=strong_selection(tmp_path / "sel"), scale=0.0)
    tok = lm.tokenizer
    reqs = [(("a", "b"), tok(c)["input_ids"], tok(x, add_special_tokens=False)["input_ids"])
            for c, x in [("2+2=", "4"), ("The cat", " sat on the mat"), ("x", "yz"), ("hello world, ", "bye")]]
    ours = lm._loglikelihood_tokens(reqs)
    theirs = HFLM._loglikelihood_tokens(lm, reqs)
    assert [g for _, g in ours] == [g for _, g in theirs]
    np.testing.assert_allclose([l for l, _ in ours], [l for l, _ in theirs], rtol=1e-5, atol=1e-4)


def test_generate_until_is_steered_at_the_generation_positions(tmp_path, tiny_dir) -> None:
    sel_dir = strong_selection(tmp_path / "sel")
    prompts = ["2+2=", "The cat sat", "hi"]
    reqs = [Instance(request_type="generate_until", doc={}, arguments=(p, {"until": ["\n"], "max_gen_toks": 6}),
                     idx=i) for i, p in enumerate(prompts)]
    steered = make_lm(tiny_dir, selection=sel_dir).generate_until(reqs, disable_tqdm=True)
    plain = make_lm(tiny_dir).generate_until(reqs, disable_tqdm=True)
    lm = make_lm(tiny_dir)
    sel = Selection.load(sel_dir)
    for prompt, got in zip(prompts, steered):
        enc = lm.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad(), sel.apply(lm.model):
            out = lm.model.generate(**enc, max_new_tokens=6, do_sample=False)
        want = lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).split("\n")[0]
        assert got == want
    assert steered != plain


@pytest.mark.skipif(not SST2.is_file(), reason="needs the shared SST-2 data in ../shared/datasets")
def test_corrsteer_lm_eval_command_runs_a_local_task_file(tmp_path, tiny_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # the task file's data path is relative to the repository root
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    sel_dir = strong_selection(tmp_path / "sel")
    out = tmp_path / "out"
    code = main(["lm-eval", "--model", "corrsteer", "--model_args", f"pretrained={tiny_dir},selection={sel_dir}",
                 "--tasks", "sst2_local", "--include_path", str(TASKS), "--limit", "8", "--device", "cpu",
                 "--batch_size", "4", "--output_path", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "sst2_local" in printed and "acc" in printed
    result = json.loads(next(out.rglob("results_*.json")).read_text())
    assert result["results"]["sst2_local"]["acc,none"] >= 0.0
    assert main(["lm-eval", "--model", "corrsteer", "--model_args", f"pretrained={tiny_dir},scael=2",
                 "--tasks", "sst2_local", "--include_path", str(TASKS), "--limit", "2"]) != 0


def _responses(doc: dict, task: str) -> np.ndarray | list:
    """Per-sample filtered responses of a task: log-likelihoods (array) or generated strings (list)."""
    resps = [s["filtered_resps"] for s in doc["samples"][task]]
    if isinstance(resps[0][0], (list, tuple)):
        return np.array([[r[0] for r in rs] for rs in resps], float)
    return [rs[0] for rs in resps]


def _compare_with_hf(hf_args: str, corrsteer_args: str, sel_dir: str, limit: int, tasks: tuple[str, ...]) -> dict:
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASKS))

    def run(model: str, args: str) -> dict:
        return lm_eval.simple_evaluate(model=model, model_args=args, tasks=list(tasks), limit=limit, batch_size=8,
                                       device="cpu", task_manager=tm, log_samples=True)

    return {"hf": run("hf", hf_args), "plain": run("corrsteer", corrsteer_args),
            "steered": run("corrsteer", f"{corrsteer_args},selection={sel_dir}")}


@pytest.mark.skipif(not SST2.is_file(), reason="needs the shared SST-2 data in ../shared/datasets")
def test_unsteered_equals_lm_eval_s_hf_model_and_steered_differs(tmp_path, tiny_dir, monkeypatch) -> None:
    """Both output types: log-likelihood (sst2_local) and generate_until (sst2_local_gen), on a tiny model."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = _compare_with_hf(f"pretrained={tiny_dir},dtype=float32", f"pretrained={tiny_dir}",
                            strong_selection(tmp_path / "sel", norm=8.0), 12, ("sst2_local", "sst2_local_gen"))
    for task, metric in (("sst2_local", "acc,none"), ("sst2_local_gen", "exact_match,first_label")):
        assert docs["plain"]["results"][task][metric] == docs["hf"]["results"][task][metric]
    np.testing.assert_allclose(_responses(docs["plain"], "sst2_local"), _responses(docs["hf"], "sst2_local"),
                               rtol=1e-5, atol=1e-4)
    assert np.abs(_responses(docs["steered"], "sst2_local") - _responses(docs["plain"], "sst2_local")).max() > 0.1
    gen = {name: [s["resps"][0][0] for s in doc["samples"]["sst2_local_gen"]] for name, doc in docs.items()}
    assert gen["plain"] == gen["hf"] and gen["steered"] != gen["plain"]


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(not SST2.is_file(), reason="needs the shared SST-2 data in ../shared/datasets")
def test_embedded_model_unsteered_equals_hf_and_steered_differs(tmp_path, monkeypatch) -> None:
    """The same on the embedded Gemma 3 270M (its converted folder is what `hf` loads); ~3 min on 2 busy cores."""
    from corrsteer.models import load_model
    from corrsteer.models.embedded import EMBEDDED, converted_dir

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    try:
        load_model("gemma-3-270m", device="cpu")  # converts into the cache once
    except Exception as exc:  # noqa: BLE001 - the embedded packages are optional
        pytest.skip(f"embedded model not installed: {exc}")
    rng = np.random.default_rng(0)
    v = rng.standard_normal((1, 640)).astype(np.float32)
    sel_dir = Selection(mode="all", features=[], directions={6: v / np.linalg.norm(v)},
                        coefficients={6: np.array([60.0])}, sites={6: "resid_post"}).save(tmp_path / "sel")
    folder = converted_dir(EMBEDDED["gemma-3-270m"].sha256)
    docs = _compare_with_hf(f"pretrained={folder},dtype=float32", "pretrained=gemma-3-270m", str(sel_dir), 64,
                            ("sst2_local",))
    acc = {name: doc["results"]["sst2_local"]["acc,none"] for name, doc in docs.items()}
    lls = {name: _responses(doc, "sst2_local") for name, doc in docs.items()}
    assert acc["plain"] == acc["hf"]
    np.testing.assert_allclose(lls["plain"], lls["hf"], rtol=1e-5, atol=1e-4)
    assert np.abs(lls["steered"] - lls["plain"]).max() > 0.1
