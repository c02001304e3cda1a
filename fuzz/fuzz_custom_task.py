"""Target: the custom task reader (``get_task("custom", ...)``: CSV, TSV, JSONL and JSON files).

Input: byte 0 picks the file type and one of a few templates and options; the rest is the
file. Expected: ``ValueError`` or ``TypeError`` naming the file. A task that loads offers, in
every prompt, exactly the labels some row has (no ``None``, no empty option).
"""

from __future__ import annotations

from harness import instrumented, main, write

with instrumented():
    from corrsteer.tasks import get_task

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
TEMPLATES = ("{text}", "Review: {text}\n{options}\nAnswer:", "{text} / {label}")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    suffix = SUFFIXES[data[0] % 4]
    template = TEMPLATES[(data[0] // 4) % 3]
    options = {"split_column": "split"} if data[0] & 0x20 else {}
    path = write(f"data{suffix}", data[1:])
    try:
        task = get_task("custom", path=str(path), template=template, **options)
        splits = task.splits()
    except (ValueError, TypeError) as exc:
        assert path.name in str(exc) or "task 'custom'" in str(exc), exc
        return
    samples = [s for split in splits.values() for s in split]
    labels = {s.meta["label"] for s in samples}
    for s in samples:
        assert set(s.options) == labels and all(o.strip() for o in s.options), (s.options, labels)
        assert 0 <= s.target < len(s.options)
        task.prompt(s)


if __name__ == "__main__":
    main(TestOneInput)
