"""Gold "human" oracles: deterministic sentiment scorers that stand in for human labellers.

They label synthetic preferences offline (:mod:`rlhf_env.data.synthetic`) and measure the true
objective in evaluation, while the policy is trained against a *learned* reward model.
Both are reward functions: ``oracle(prompts, responses) -> list[float]``.
"""

from __future__ import annotations

from rlhf_env.extras import require


class VaderSentiment:
    """VADER compound sentiment of the response, in ``[-1, 1]`` (Hutto & Gilbert 2014).

    ``score = polarity_scores(response)["compound"]``; with ``include_prompt=True`` the prompt
    and response are scored together. Needs ``vaderSentiment`` (its lexicon ships inside).
    """

    def __init__(self, include_prompt: bool = False) -> None:
        vader = require("vaderSentiment.vaderSentiment", "metrics", "VaderSentiment")
        self._analyzer = vader.SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One compound score per response."""
        texts = _texts(prompts, responses, self.include_prompt)
        return [float(self._analyzer.polarity_scores(text)["compound"]) for text in texts]


class TextBlobPolarity:
    """TextBlob pattern-lexicon polarity of the response, in ``[-1, 1]``.

    ``score = TextBlob(response).sentiment.polarity``. Works offline (the lexicon ships with
    ``textblob``); nothing here needs NLTK corpora.
    """

    def __init__(self, include_prompt: bool = False) -> None:
        self._textblob = require("textblob", "metrics", "TextBlobPolarity").TextBlob
        self.include_prompt = include_prompt

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One polarity per response."""
        texts = _texts(prompts, responses, self.include_prompt)
        return [float(self._textblob(text).sentiment.polarity) for text in texts]


def _texts(prompts: list[str], responses: list[str], include_prompt: bool) -> list[str]:
    if include_prompt:
        return [p + r for p, r in zip(prompts, responses, strict=True)]
    return list(responses)


#: The oracles by the name the CLI and the demo take.
ORACLES = {"vader": VaderSentiment, "textblob": TextBlobPolarity}


def make_oracle(name: str) -> VaderSentiment | TextBlobPolarity:
    """An oracle scoring the response alone, by name (``"vader"`` or ``"textblob"``)."""
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r}; choose one of {sorted(ORACLES)}")
    return ORACLES[name]()
