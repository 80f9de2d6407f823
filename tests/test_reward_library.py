"""Oracles, text-metric rewards, penalties and the composite, against the libraries directly."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from rlhf_env.rewards.metrics import (
    BLEUReward,
    ChrFReward,
    CompositeReward,
    LengthPenalty,
    RougeReward,
)
from rlhf_env.rewards.oracles import TextBlobPolarity, VaderSentiment

REFERENCES = {
    "Summarise:": ["the cat sat on the mat", "a cat was sitting on the mat"],
    "Translate:": ["good morning everyone"],
}
PROMPTS = ["Summarise:", "Translate:", "Summarise:"]
RESPONSES = ["the cat sat on a mat", "good morning all", "dogs bark loudly"]


def test_bleu_and_chrf_match_sacrebleu():
    bleu = BLEUReward(REFERENCES)(PROMPTS, RESPONSES)
    chrf = ChrFReward(REFERENCES)(PROMPTS, RESPONSES)
    for prompt, response, b, c in zip(PROMPTS, RESPONSES, bleu, chrf, strict=True):
        refs = REFERENCES[prompt]
        assert b == pytest.approx(sacrebleu.sentence_bleu(response, refs).score / 100)
        assert c == pytest.approx(sacrebleu.sentence_chrf(response, refs).score / 100)
    assert bleu[0] > bleu[2] and chrf[0] > chrf[2]


@pytest.mark.parametrize("variant", ["rouge1", "rouge2", "rougeL"])
def test_rouge_matches_rouge_score(variant):
    scores = RougeReward(REFERENCES, variant=variant)(PROMPTS, RESPONSES)
    scorer = rouge_scorer.RougeScorer([variant])
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores, strict=True):
        expected = max(scorer.score(r, response)[variant].fmeasure for r in REFERENCES[prompt])
        assert score == pytest.approx(expected)


def test_references_from_a_callable_and_missing_references():
    reward = BLEUReward(lambda prompt: ["hello world"])
    assert reward(["anything"], ["hello world"]) == [pytest.approx(1.0)]
    with pytest.raises(KeyError, match="no references for prompt 'Unknown:'"):
        BLEUReward(REFERENCES)(["Unknown:"], ["x"])


def test_oracles_match_their_libraries():
    from textblob import TextBlob
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    responses = ["a wonderful, moving film", "dull and awful", "it is a film"]
    vader = VaderSentiment()(["p"] * 3, responses)
    blob = TextBlobPolarity()(["p"] * 3, responses)
    analyzer = SentimentIntensityAnalyzer()
    assert vader == [analyzer.polarity_scores(r)["compound"] for r in responses]
    assert blob == [TextBlob(r).sentiment.polarity for r in responses]
    assert vader[0] > 0 > vader[1]
    with_prompt = VaderSentiment(include_prompt=True)(["I hated it. "], ["ok"])
    assert with_prompt == [analyzer.polarity_scores("I hated it. ok")["compound"]]


def test_length_penalty_in_characters_and_tokens(tokenizer):
    penalty = LengthPenalty(min_length=3, max_length=5, coef=0.5)
    assert penalty(["p"] * 3, ["ab", "abcd", "abcdefgh"]) == [-0.5, 0.0, -1.5]
    tokens = LengthPenalty(max_length=1, coef=1.0, tokenizer=tokenizer)
    n = len(tokenizer(" great film", add_special_tokens=False)["input_ids"])
    assert tokens(["p"], [" great film"]) == [-(n - 1.0)]
    with pytest.raises(ValueError, match="max_length"):
        LengthPenalty(min_length=5, max_length=2)


def test_composite_is_the_weighted_sum():
    composite = CompositeReward(
        [(2.0, lambda p, r: [1.0] * len(r)), (-0.5, lambda p, r: [len(x) for x in r])]
    )
    assert composite(["a", "b"], ["xy", "xyz"]) == [2.0 - 1.0, 2.0 - 1.5]
    with pytest.raises(ValueError, match="at least one"):
        CompositeReward([])
