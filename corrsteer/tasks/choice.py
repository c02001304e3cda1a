"""Multiple-choice tasks: lettered prompts, robust answer extraction, seeded option order.

Used by MMLU, BBQ, TruthfulQA, EMGSD, SST-2 and custom classification tasks. A sample
shows its options as ``A. ...``, ``B. ...``; the model's completion is read by
:func:`extract_choice`, which accepts ``" B"``, ``"B."``, ``"(B)"``, ``"B) text"``,
``"Answer: B"``, ``"The answer is B"`` and the option text itself, and returns None when
the completion names no option (reward 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from corrsteer.tasks.base import Sample, Task, stable_rng

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_ANSWER_IS = re.compile(r"\banswer(?:\s+is|\s+would\s+be)?\s*[:\-]?\s*(?:option\s+)?[(\[*\"']*([a-z])\b(?![a-z'])",
                        re.IGNORECASE)
_LEADING = re.compile(r"^(?i:option\s+)?[(\[]?([A-Z])(?:[).\]:,*]|\s|$)")
_LEADING_LOWER = re.compile(r"^[(\[]?([a-z])[)\]](?:\s|$)")
_JUNK = re.compile(r"^[\s*_#>\"'`:\-]+")


def normalise(text: str) -> str:
    """Lower-case, unify apostrophes/quotes, drop punctuation, collapse whitespace."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def extract_choice(completion: str, options: Sequence[str]) -> int | None:
    """Read which option a completion picks.

    Args:
        completion: the generated text (already cut at a stop string).
        options: the options in display order (letter i names options[i]).

    Returns:
        the option index, or None when no option can be read.

    Example:
        >>> extract_choice(" (B) The grandson", ["The grandfather", "The grandson", "Unknown"])
        1
    """
    n = len(options)
    valid = LETTERS[:n]
    text = _JUNK.sub("", completion.replace("\u2019", "'")).strip()
    if not text or n == 0:
        return None
    match = _ANSWER_IS.search(text)
    if match:
        letter = match.group(1)
        framed = (re.search(r"[(\[:*]\s*$", text[:match.start(1)]) is not None
                  or re.match(r"\s*(?:[).\]*,]|$)", text[match.end(1):]) is not None)
        # lower case only inside a clear frame: "answer is a dog" names no option
        if letter.upper() in valid and (letter.isupper() or framed):
            return valid.index(letter.upper())
    match = _LEADING.match(text)
    if match and match.group(1) in valid:
        rest = text[match.end():].strip()
        delimited = text[match.end() - 1:match.end()] in ").]:,*"
        # a leading "A word" is usually the article, unless the option text follows
        if match.group(1) != "A" or not rest or delimited or _starts_with_option(rest, options) is not None:
            return valid.index(match.group(1))
    match = _LEADING_LOWER.match(text)
    if match and match.group(1).upper() in valid:
        return valid.index(match.group(1).upper())
    start = _starts_with_option(text, options)
    return start if start is not None else _contains_one_option(text, options)


def _starts_with_option(text: str, options: Sequence[str]) -> int | None:
    norm = normalise(text)
    best, best_len = None, 0
    for i, opt in enumerate(options):
        o = normalise(opt)
        if o and (norm == o or norm.startswith(o + " ")) and len(o) > best_len:
            best, best_len = i, len(o)
    return best


def _contains_one_option(text: str, options: Sequence[str]) -> int | None:
    norm = f" {normalise(text)} "
    hits = [i for i, opt in enumerate(options) if normalise(opt) and f" {normalise(opt)} " in norm]
    # drop options that are contained in another matching option ("gay" vs "not gay")
    hits = [i for i in hits if not any(j != i and normalise(options[i]) in normalise(options[j]) for j in hits)]
    return hits[0] if len(hits) == 1 else None


def format_options(options: Sequence[str]) -> str:
    """``"A. first\\nB. second"`` for the options in display order."""
    return "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def seeded_order(n: int, *key: object) -> list[int]:
    """A permutation of ``range(n)`` fixed by ``key`` (sample id + split seed)."""
    return [int(i) for i in stable_rng("options", *key).permutation(n)]


class MultipleChoiceTask(Task):
    """A task whose samples carry ``options`` and whose target is the gold option index.

    ``header`` (optional) is prepended to the question; ``instruction`` is appended in
    the chat form ("Answer with the letter..."). The base form ends with ``"Answer:"``.
    """

    max_new_tokens = 6
    stop_strings = ("\n",)
    default_pool = "max"
    instruction = "Answer with the letter of the correct option."
    show_options = True  # False when the question text already lists the options

    def header(self, sample: Sample) -> str:
        """A line shown before the question (e.g. MMLU's subject); empty by default."""
        return ""

    def body(self, sample: Sample) -> str:
        head = self.header(sample)
        text = (head + "\n\n" if head else "") + sample.question
        return f"{text}\n{format_options(sample.options)}" if self.show_options else text

    def user_text(self, sample: Sample) -> str:
        return f"{self.body(sample)}\n\n{self.instruction}"

    def base_prompt(self, sample: Sample) -> str:
        return f"{self.body(sample)}\nAnswer:"

    def extract(self, sample: Sample, completion: str) -> int | None:
        return extract_choice(completion, sample.options)

    def check_sample(self, sample: Sample) -> Sample:
        """Validate a sample built from data: >= 2 options and the target one of them."""
        if len(sample.options) < 2 or len(sample.options) > len(LETTERS):
            raise ValueError(f"{sample.id}: a multiple-choice sample needs 2..26 options, got {len(sample.options)}")
        if not isinstance(sample.target, int) or not 0 <= sample.target < len(sample.options):
            raise ValueError(f"{sample.id}: target {sample.target!r} is not an index into its "
                             f"{len(sample.options)} options")
        return sample
