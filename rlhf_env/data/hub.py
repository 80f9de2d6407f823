"""Load a ``datasets`` dataset from a hub name or a local data file."""

from __future__ import annotations

from pathlib import Path

from rlhf_env.extras import require

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_dataset(name_or_path: str | Path, split: str = "train"):
    """A ``datasets.Dataset``: a local JSON / JSONL / CSV / Parquet file (its one split), or the
    ``split`` of a hub dataset or local dataset folder."""
    datasets = require("datasets", "datasets", "loading through datasets")
    path = Path(name_or_path)
    if path.is_file():
        builder = _BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(
                f"{path}: unsupported data file type {path.suffix!r}; "
                f"use one of {sorted(_BUILDERS)}"
            )
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    return datasets.load_dataset(str(name_or_path), split=split)
