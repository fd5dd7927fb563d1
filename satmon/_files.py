"""Writing a file so that a reader, or a process killed mid-write, never sees half of it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> None:
    """Replace ``path`` with ``text`` in one step: the text goes to ``<name>.tmp`` beside it,
    which is then renamed over ``path``, so ``path`` holds either its old content or all of
    the new. ``durable=True`` also flushes the data to disk before the rename (survives a
    power cut, at the cost of an fsync). The parent folder must exist. A failed write leaves
    ``path`` untouched (and possibly the ``.tmp`` file, overwritten by the next write).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
