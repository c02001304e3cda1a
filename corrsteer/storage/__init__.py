"""Files on disk, written so that nothing is ever half-written or silently misread.

- :mod:`~corrsteer.storage.atomic`: atomic file and folder replacement, used by every writer;
- :mod:`~corrsteer.storage.jsonable`: the one JSON sanitiser;
- :mod:`~corrsteer.storage.safetensors`: the one safetensors reader and writer;
- :mod:`~corrsteer.storage.hub`: the one Hugging Face hub reachability probe.

Nothing here imports torch at import time.
"""

from corrsteer.storage.atomic import atomic_open, replace_dir, write_bytes, write_json, write_text
from corrsteer.storage.jsonable import to_jsonable

__all__ = ["atomic_open", "replace_dir", "to_jsonable", "write_bytes", "write_json", "write_text"]
