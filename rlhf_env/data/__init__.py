"""Data: prompt sources, preference pairs, synthetic preferences from a gold oracle."""

from rlhf_env.data.preferences import (
    PreferenceDataError,
    PreferencePair,
    load_dataset_pairs,
    load_jsonl_pairs,
    load_pairs,
    pair_from_record,
    split_hh_dialogues,
    write_jsonl_pairs,
)
from rlhf_env.data.prompts import (
    PromptsLike,
    PromptSource,
    dataset_prompts,
    imdb_prompts,
    text_file_prompts,
)

__all__ = [
    "PreferenceDataError",
    "PreferencePair",
    "PromptSource",
    "PromptsLike",
    "dataset_prompts",
    "imdb_prompts",
    "load_dataset_pairs",
    "load_jsonl_pairs",
    "load_pairs",
    "pair_from_record",
    "split_hh_dialogues",
    "text_file_prompts",
    "write_jsonl_pairs",
]
