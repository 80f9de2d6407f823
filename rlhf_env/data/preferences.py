"""Preference pairs ``(prompt, chosen, rejected)``: parsing, validation, JSONL and ``datasets``.

Two record shapes are accepted:

- explicit: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` where chosen and rejected are
  the two responses;
- HH-RLHF: ``{"chosen": ..., "rejected": ...}`` holding two *full dialogues*
  (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) that share the conversation and differ in the
  last assistant turn. :func:`split_hh_dialogues` splits off the shared prompt.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_env.data.hub import load_dataset

ASSISTANT_MARKER = "\n\nAssistant:"


class PreferenceDataError(ValueError):
    """A preference record or file is malformed; the message names the record or file."""


@dataclass(frozen=True)
class PreferencePair:
    """One human (or oracle) judgement: ``chosen`` is preferred to ``rejected`` for ``prompt``."""

    prompt: str
    chosen: str
    rejected: str

    def to_record(self) -> dict[str, str]:
        """The explicit JSON record of this pair."""
        return asdict(self)


def split_hh_dialogues(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF dialogues into ``(prompt, chosen_response, rejected_response)``.

    The prompt is the longest shared prefix of the two dialogues that ends with an
    ``"\\n\\nAssistant:"`` marker, so multi-turn conversations keep every earlier turn in the
    prompt and the responses are the two different last assistant turns. Dialogues that share
    no such prefix give an empty prompt and the whole texts as responses.

    Example:
        >>> split_hh_dialogues("\\n\\nHuman: Hi\\n\\nAssistant: Hello!",
        ...                    "\\n\\nHuman: Hi\\n\\nAssistant: Go away.")
        ('\\n\\nHuman: Hi\\n\\nAssistant:', ' Hello!', ' Go away.')
    """
    shared = len(os.path.commonprefix([chosen, rejected]))  # noqa: RUF071 (characters, as meant)
    # The last marker lying wholly inside the shared prefix ends the prompt.
    marker = chosen.rfind(ASSISTANT_MARKER, 0, shared)
    cut = marker + len(ASSISTANT_MARKER) if marker >= 0 else 0
    return chosen[:cut], chosen[cut:], rejected[cut:]


def pair_from_record(record: Mapping[str, Any], where: str = "record") -> PreferencePair:
    """A :class:`PreferencePair` from an explicit or an HH-RLHF record.

    Raises:
        PreferenceDataError: missing or non-string fields, or chosen equal to rejected; the
            message starts with ``where`` (e.g. ``"pairs.jsonl line 7"``).
    """
    if not isinstance(record, Mapping):
        raise PreferenceDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("chosen", "rejected") if key not in record]
    if missing:
        raise PreferenceDataError(
            f"{where}: missing field(s) {missing}; a preference record needs 'chosen' and "
            f"'rejected' (and 'prompt' unless they are full HH-RLHF dialogues); it has "
            f"{sorted(record)}"
        )
    for key in ("prompt", "chosen", "rejected"):
        if key in record and not isinstance(record[key], str):
            raise PreferenceDataError(
                f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}"
            )
    if "prompt" in record:
        prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
    else:
        prompt, chosen, rejected = split_hh_dialogues(record["chosen"], record["rejected"])
    if chosen == rejected:
        raise PreferenceDataError(
            f"{where}: chosen and rejected are identical ({chosen[:80]!r}); a preference pair "
            "needs two different responses: drop or fix this record"
        )
    return PreferencePair(prompt, chosen, rejected)


def load_jsonl_pairs(path: str | Path) -> list[PreferencePair]:
    """Preference pairs from a JSONL file (``.jsonl``, or gzipped ``.jsonl.gz``), one record
    per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} does not exist")
    pairs = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise PreferenceDataError(f"{where}: not valid JSON ({error.msg})") from error
            pairs.append(pair_from_record(record, where))
    if not pairs:
        raise PreferenceDataError(f"{path} holds no preference records; it is empty")
    return pairs


def load_dataset_pairs(
    name_or_path: str | Path, split: str = "train", limit: int | None = None
) -> list[PreferencePair]:
    """Preference pairs from ``datasets``: a hub name (e.g. ``"Anthropic/hh-rlhf"``) or a local
    data file / folder (JSON, JSONL, CSV, Parquet)."""
    dataset = load_dataset(name_or_path, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise PreferenceDataError(f"{name_or_path} ({split}) holds no preference records")
    return [
        pair_from_record(record, f"{name_or_path} [{split}] row {index}")
        for index, record in enumerate(dataset)
    ]


def load_pairs(source: str | Path, split: str = "train") -> list[PreferencePair]:
    """Preference pairs from a ``.jsonl`` or ``.jsonl.gz`` file, or else through ``datasets``."""
    if str(source).endswith((".jsonl", ".jsonl.gz")):
        return load_jsonl_pairs(source)
    return load_dataset_pairs(source, split)


def write_jsonl_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    """Write pairs as explicit JSONL records; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_record(), ensure_ascii=False) + "\n")
    return path
