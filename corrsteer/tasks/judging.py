"""Judges of generated text: a word n-gram logistic regression, pure NumPy.

A judge maps a text to ``P(label = 1)``. :class:`NgramJudge` is a logistic regression
on the presence of word unigrams and bigrams from a fixed vocabulary; it is trained
by :func:`train_ngram_judge` and stored as one JSON file (vocabulary -> weight, the
bias, the training settings and the accuracy measured on a held-out file).

The shipped sentiment judge, ``corrsteer/tasks/judges/sentiment_sst2.json`` (~0.4 MB),
is built by ``python scripts/train_judges.py`` from SST-2 (``sst2/train.tsv``, 6,920
sentences; label 1 = positive) in 20-100 s: L2 strength chosen by seeded 5-fold
cross-validation on train (1e-4), then refit on all of train (17,765 n-grams). Its
accuracy on ``sst2/dev.tsv`` (872 sentences, never used for fitting or for choosing the
L2 strength) is **0.792** (stored in the file as ``dev_accuracy``; a test re-measures
it). Bag-of-words models on SST-2 reach about 0.80, fine-tuned transformers 0.9+: this
judge sees words, not syntax ("not the best" reads as positive through "the best").

Tokens: lower-cased words (letters, digits, inner hyphens and apostrophes), English
clitics split as in the Penn Treebank (``won't`` -> ``wo n't``, ``it's`` -> ``it 's``,
matching SST-2's own tokenisation), and ``!`` / ``?``; other punctuation and SST-2's
``-lrb-`` / ``-rrb-`` are dropped. Features: the unigrams and bigrams seen in at least 2
training sentences, except those made only of function words (:data:`STOP_WORDS`:
"was", "it was", "for me"). In SST-2 those carry the reviews' habits (past tense leans
negative: P("it was a great experience") was 0.49 with them) and they do not transfer
to other text.

Example:
    >>> judge = sentiment_judge()
    >>> round(judge.probability("a warm, funny and wonderful film"), 2) > 0.5
    True
    >>> judge.probability("a dull, boring mess") < 0.5
    True
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "corrsteer-ngram-judge-1"
JUDGE_DIR = Path(__file__).resolve().parent / "judges"
SENTIMENT_FILE = JUDGE_DIR / "sentiment_sst2.json"

_CLITIC = re.compile(r"(?<=[a-z0-9])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-'/][a-z0-9]+)*|[!?]")
_SST_MARKUP = re.compile(r"-lrb-|-rrb-|-lsb-|-rsb-|``|''")
# Function words: an n-gram made of these alone ("was", "it was", "for me") is not a
# feature. In SST-2 they carry the reviews' habits (past tense leans negative), which
# do not transfer to other text. Negations, "but", "too", "very", "so" stay features.
STOP_WORDS = frozenset("""
a an the this that these those it its he him his she her they them their we us our you your i me my
is was are were be been being am 's 're 've 'll 'd 'm have has had do does did will would can could should may might
of in on at to for from with by about as into over under than then there here what which who whom whose when where
why how and or if while because
""".split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens with Penn-Treebank clitics (see the module docstring).

    Example:
        >>> tokenize("It wasn't great -- it's FINE!")
        ['it', 'was', "n't", 'great', 'it', "'s", 'fine', '!']
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("\\/", "/")
    text = _SST_MARKUP.sub(" ", text)
    text = _CLITIC.sub(r" \1", text)
    return _TOKEN.findall(text)


def ngrams(tokens: Sequence[str], n_max: int = 2) -> set[str]:
    """The distinct n-grams of ``tokens`` for n = 1..n_max, words joined by one space."""
    out: set[str] = set()
    for n in range(1, n_max + 1):
        out.update(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return out


@dataclass
class NgramJudge:
    """Logistic regression on n-gram presence: ``P(1 | text) = sigmoid(bias + sum of weights[g])``
    over the distinct n-grams ``g`` of the text that are in the vocabulary.

    Attributes:
        weights: n-gram -> weight (the vocabulary).
        bias: intercept.
        n_max: longest n-gram (2 = unigrams and bigrams).
        labels: names of label 0 and label 1, e.g. ``("negative", "positive")``.
        meta: training settings and measured accuracies (``dev_accuracy``, ...).
        path: the file it was read from, if any.
    """

    weights: dict[str, float]
    bias: float
    n_max: int = 2
    labels: tuple[str, str] = ("0", "1")
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def logit(self, text: str) -> float:
        """``bias + sum of weights`` of the text's distinct in-vocabulary n-grams."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        w = self.weights
        return self.bias + math.fsum(w[g] for g in ngrams(tokenize(text), self.n_max) if g in w)

    def probability(self, text: str) -> float:
        """``P(label 1 | text)`` in (0, 1)."""
        z = self.logit(text)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def predict(self, text: str) -> int:
        """1 iff :meth:`probability` >= 0.5."""
        return int(self.logit(text) >= 0.0)

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        """Share of ``texts`` whose :meth:`predict` equals the label."""
        if len(texts) != len(labels) or not texts:
            raise ValueError(f"need as many labels as texts (> 0), got {len(texts)} texts and {len(labels)} labels")
        return sum(self.predict(t) == int(y) for t, y in zip(texts, labels)) / len(texts)

    def top(self, k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """The ``k`` n-grams with the largest and the smallest weights, per label name."""
        ranked = sorted(self.weights.items(), key=lambda kv: (kv[1], kv[0]))
        return {self.labels[1]: ranked[::-1][:k], self.labels[0]: ranked[:k]}

    # ---- files -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the judge as JSON (keys sorted, weights rounded to 6 decimals)."""
        doc = {"format": FORMAT, "n_max": self.n_max, "labels": list(self.labels), "meta": self.meta,
               "bias": round(self.bias, 6), "weights": {g: round(w, 6) for g, w in sorted(self.weights.items())}}
        Path(path).write_text(json.dumps(doc, indent=0, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> NgramJudge:
        """Read a judge written by :meth:`save`.

        Raises:
            ValueError: the file is missing, not JSON, or not a judge; the message names the file.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"judge file {path} does not exist; build it with `python scripts/train_judges.py`")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"judge file {path} is not valid JSON ({exc}); rebuild it with "
                             "`python scripts/train_judges.py`") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"judge file {path} is not a {FORMAT!r} file (format: {found!r})")
        weights, bias = doc.get("weights"), doc.get("bias")
        if not isinstance(weights, dict) or not weights or not isinstance(bias, (int, float)):
            raise ValueError(f"judge file {path} needs a non-empty 'weights' object and a numeric 'bias'")
        bad = [g for g, w in weights.items() if not isinstance(w, (int, float)) or not math.isfinite(w)]
        if bad or not math.isfinite(bias):
            raise ValueError(f"judge file {path} has non-finite or non-numeric weights, e.g. {bad[:3]}")
        labels = doc.get("labels", ["0", "1"])
        n_max = doc.get("n_max", 2)
        if not (isinstance(labels, list) and len(labels) == 2) or not isinstance(n_max, int) or n_max < 1:
            raise ValueError(f"judge file {path}: 'labels' must list 2 names and 'n_max' be an int >= 1")
        return cls({g: float(w) for g, w in weights.items()}, float(bias), n_max, (str(labels[0]), str(labels[1])),
                   dict(doc.get("meta") or {}), path)


# ---- training --------------------------------------------------------------------
def _design(texts: Sequence[str], vocab: dict[str, int], n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse binary design matrix as (row index, column index) pairs, sorted per row."""
    rows, cols = [], []
    for i, t in enumerate(texts):
        idx = sorted(vocab[g] for g in ngrams(tokenize(t), n_max) if g in vocab)
        rows.extend([i] * len(idx))
        cols.extend(idx)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _fit(rows: np.ndarray, cols: np.ndarray, y: np.ndarray, d: int, l2: float,
         iters: int = 500, tol: float = 1e-7) -> tuple[np.ndarray, float]:
    """Minimise mean log-loss + l2/2 * |w|^2 (bias unpenalised) with L-BFGS (memory 10).

    Deterministic: full batch, fixed start (zeros), float64 throughout, and the
    objective is strictly convex, so the optimum does not depend on the path.
    """
    n = y.shape[0]

    def fg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = np.bincount(rows, weights=w[cols], minlength=n) + b  # (n,)
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(w @ w)
        r = (1.0 / (1.0 + np.exp(-z)) - y) / n  # (n,)
        g = np.empty(d + 1)
        g[:d] = np.bincount(cols, weights=r[rows], minlength=d) + l2 * w
        g[d] = r.sum()
        return loss, g

    theta = np.zeros(d + 1)
    f, g = fg(theta)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(iters):
        q = g.copy()
        alphas = []
        for s, yy in zip(reversed(s_hist), reversed(y_hist)):
            a = (s @ q) / (yy @ s)
            alphas.append(a)
            q -= a * yy
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for (s, yy), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (a - (yy @ q) / (yy @ s))
        step, direction = 1.0, -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            direction, slope, s_hist, y_hist = -g, -float(g @ g), [], []
        while True:
            new = theta + step * direction
            f_new, g_new = fg(new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_vec, y_vec = new - theta, g_new - g
        if s_vec @ y_vec > 1e-12:
            s_hist.append(s_vec)
            y_hist.append(y_vec)
            if len(s_hist) > 10:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(f - f_new) <= tol * max(1.0, abs(f))
        theta, f, g = new, f_new, g_new
        if converged or float(np.abs(g).max()) < 1e-9:
            break
    return theta[:d], float(theta[d])


def train_ngram_judge(texts: Sequence[str], labels: Sequence[int], l2: float = 1e-3, min_df: int = 2,
                      n_max: int = 2, label_names: tuple[str, str] = ("0", "1")) -> NgramJudge:
    """Fit an :class:`NgramJudge` on labelled texts (deterministic: same inputs, same weights).

    Args:
        texts, labels: training sentences and their labels in {0, 1}.
        l2: L2 strength on the weights (per-sample mean loss, so it does not scale with n).
        min_df: keep n-grams that occur in at least this many training texts and hold at
            least one word outside :data:`STOP_WORDS`.
        n_max: longest n-gram.
        label_names: display names of labels 0 and 1.

    Returns:
        the judge; ``meta`` holds ``l2``, ``min_df``, ``n_train`` and ``train_accuracy``.
    """
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts (> 0), got {len(texts)} and {len(labels)}")
    y = np.asarray(labels, dtype=np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    df = Counter(g for t in texts for g in ngrams(tokenize(t), n_max))
    keep = (g for g, c in df.items() if c >= min_df and not all(w in STOP_WORDS for w in g.split(" ")))
    vocab = {g: i for i, g in enumerate(sorted(keep))}
    rows, cols = _design(texts, vocab, n_max)
    w, b = _fit(rows, cols, y, len(vocab), l2)
    names = sorted(vocab, key=vocab.__getitem__)
    # Rounded as in the saved file, so a judge in memory and its file score texts alike.
    judge = NgramJudge({g: round(float(w[i]), 6) for i, g in enumerate(names)}, round(b, 6), n_max, label_names)
    judge.meta = {"l2": l2, "min_df": min_df, "stop_words": sorted(STOP_WORDS), "n_train": len(texts),
                  "n_features": len(vocab),
                  "train_accuracy": round(judge.accuracy(texts, labels), 4)}
    return judge


def read_sst2(path: str | Path) -> tuple[list[str], list[int]]:
    """Sentences and labels of an SST-2 TSV (``label<TAB>sentence``, no header, 1 = positive)."""
    path = Path(path)
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(row) != 2 or row[0] not in ("0", "1"):
                raise ValueError(f"{path}:{i + 1}: expected 'label<TAB>sentence' with label 0 or 1, got {row[:2]!r}")
            labels.append(int(row[0]))
            texts.append(row[1])
    return texts, labels


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded in the judge's ``meta`` for provenance)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
CV_FOLDS, CV_SEED = 5, 0


def build_sentiment_judge(sst2_dir: str | Path, l2_grid: Sequence[float] = L2_GRID) -> NgramJudge:
    """Train the sentiment judge from ``sst2_dir/train.tsv`` and measure it on ``dev.tsv``.

    The L2 strength is the one of ``l2_grid`` with the best mean accuracy over a seeded
    5-fold cross-validation on train (ties: the stronger L2); the judge is then refit on
    all of train. ``dev.tsv`` is used for the reported ``dev_accuracy`` only.
    """
    sst2_dir = Path(sst2_dir)
    texts, labels = read_sst2(sst2_dir / "train.tsv")
    dev_texts, dev_labels = read_sst2(sst2_dir / "dev.tsv")
    folds = np.array_split(np.random.default_rng(CV_SEED).permutation(len(texts)), CV_FOLDS)
    cv = {}
    for l2 in l2_grid:
        accs = []
        for k, held in enumerate(folds):
            fit = np.concatenate([f for i, f in enumerate(folds) if i != k])
            j = train_ngram_judge([texts[i] for i in fit], [labels[i] for i in fit], l2=l2)
            accs.append(j.accuracy([texts[i] for i in held], [labels[i] for i in held]))
        cv[str(l2)] = round(float(np.mean(accs)), 4)
    best = max(l2_grid, key=lambda l2: (cv[str(l2)], l2))
    judge = train_ngram_judge(texts, labels, l2=best, label_names=("negative", "positive"))
    judge.meta.update({
        "data": "SST-2 train.tsv (fit), dev.tsv (dev_accuracy only)",
        "train_sha256": file_sha256(sst2_dir / "train.tsv"), "dev_sha256": file_sha256(sst2_dir / "dev.tsv"),
        "cv": {"folds": CV_FOLDS, "seed": CV_SEED, "accuracy_by_l2": cv},
        "n_dev": len(dev_texts), "dev_accuracy": round(judge.accuracy(dev_texts, dev_labels), 4),
        "built_by": "python scripts/train_judges.py"})
    return judge


_CACHE: dict[Path, NgramJudge] = {}


def sentiment_judge(path: str | Path | None = None) -> NgramJudge:
    """The shipped SST-2 sentiment judge (or the judge at ``path``), loaded once per process."""
    key = Path(path) if path is not None else SENTIMENT_FILE
    if key not in _CACHE:
        _CACHE[key] = NgramJudge.load(key)
    return _CACHE[key]
