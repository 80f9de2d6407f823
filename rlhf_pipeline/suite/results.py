"""What a suite run leaves: one :class:`RunResult` per agent, task and seed, and the
:class:`SuiteResult` (settings, machine, runs) written as JSON after every run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers


@dataclass
class RunResult:
    """One agent trained on one task with one seed.

    Attributes:
        task, agent, seed: which run.
        budget: the token budget; ``tokens``: the generated tokens it trained on (the first
            update boundary at or past the budget; 0 for a baseline).
        curve: the evaluations of the first ``curve_prompts`` held-out prompts (each
            ``eval_samples`` times, as in the final evaluation),
            ``{"fraction", "tokens", "metrics"}`` each: at the ``eval_points`` during training
            and at its end (a baseline: one, at fraction 0).
        final: the final evaluation's figures (:meth:`rlhf_agents.Evaluation.as_dict`).
        per_response: its per-response values where the evaluation gives them (NaN: None).
        sem: its standard errors over responses, where given.
        gold_name: the task's gold metric behind ``gold``.
        trained: whether the agent was trained (False for a baseline).
        seconds: wall time of the whole run (env, training, evaluations); ``train_seconds``:
            of training alone.
        device: where it ran.
        samples: the final evaluation's first :data:`SAMPLES` responses, each with the end of
            its prompt (its last :data:`SAMPLE_PROMPT_CHARS` characters).
        agent_settings: the agent's config as it ran (its dataclass ``config``, as JSON
            values: the shared settings under the task's recipe under ``agent_options``).
        history: a policy-gradient agent's logged means per iteration (``agent.history``:
            ``rollout/kl``, ``train/explained_variance``, ...; empty for other agents).
        task_details: the task's ``details`` as built for the run (the models behind its
            scores, with their held-out accuracies; sizes), as JSON values.
        training_setup: what trained (``"frozen:24"``, ...); ``options``: the env and task
            options the run's env was built with (its suite budget's and the config's).
        eval_samples: answers per held-out prompt in its evaluations (the config's, else its
            task's suite budget's; None in a file written before runs recorded it: the file's
            settings say).
    """

    task: str
    agent: str
    seed: int
    budget: int
    tokens: int
    curve: list[dict[str, Any]]
    final: dict[str, float]
    per_response: dict[str, list[float | None]] = field(default_factory=dict)
    sem: dict[str, float] = field(default_factory=dict)
    gold_name: str | None = None
    trained: bool = True
    seconds: float = 0.0
    train_seconds: float = 0.0
    device: str = ""
    samples: list[dict[str, Any]] = field(default_factory=list)
    agent_settings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    task_details: dict[str, Any] = field(default_factory=dict)
    training_setup: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    eval_samples: int | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """``(task, agent, seed)``."""
        return self.task, self.agent, self.seed


@dataclass
class SuiteResult:
    """The settings, the machine and every finished run (what the JSON file holds)."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (NaN written as null)."""
        document = {
            "settings": self.settings,
            "machine": self.machine,
            "runs": [dataclasses.asdict(run) for run in self.runs],
        }
        return _without_nan(document)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> SuiteResult:
        """The result a :meth:`to_json` document holds."""
        names = {item.name for item in dataclasses.fields(RunResult)}
        runs = [
            RunResult(**{k: v for k, v in run.items() if k in names}) for run in document["runs"]
        ]
        return cls(dict(document["settings"]), dict(document.get("machine", {})), runs)

    @classmethod
    def read(cls, path: str | Path) -> SuiteResult:
        """The result written to ``path``."""
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a suite results file ({error}); pass another --out, or --fresh"
            ) from error

    @classmethod
    def merge(cls, results: Sequence[SuiteResult]) -> SuiteResult:
        """One result from several of the same settings, e.g. the parts of one suite run in
        several processes (each on its tasks or seeds); a run found twice is an error."""
        if not results:
            raise ValueError("nothing to merge: give at least one suite result")
        first = results[0]
        for other in results[1:]:
            differ = differing_settings(first.settings, other.settings)
            if differ:
                raise ValueError(
                    f"the results were run with other settings (differing: {', '.join(differ)})"
                    "; only parts of one suite, run with the same settings, merge"
                )
        runs = [run for result in results for run in result.runs]
        keys = [run.key for run in runs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"runs {twice} are in more than one result; merge each run once")
        return cls(dict(first.settings), dict(first.machine), runs)

    def write(self, path: str | Path) -> Path:
        """Write the JSON to ``path`` atomically (an interrupted write leaves the old file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(temporary, path)
        return path

    def tasks(self) -> list[str]:
        """The tasks of the runs, in the order they first appear."""
        return list(dict.fromkeys(run.task for run in self.runs))

    def runs_of(self, task: str, agent: str | None = None) -> list[RunResult]:
        """The runs of ``task`` (of one ``agent``), in order."""
        return [r for r in self.runs if r.task == task and (agent is None or r.agent == agent)]


def differing_settings(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The names of the settings two results were run with that differ, sorted."""
    return sorted(key for key in {*first, *second} if first.get(key) != second.get(key))


def machine_info() -> dict[str, Any]:
    """Where the suite runs: platform, CPUs, torch threads, accelerator, library versions."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def rank_metric(runs: Sequence[RunResult]) -> str:
    """What ranks the runs: ``gold`` where the evaluations have it, else ``score``."""
    return "gold" if any("gold" in run.final for run in runs) else "score"


def as_float(value: Any) -> float:
    """A figure as a float (a missing one, or JSON's null for NaN, as NaN)."""
    return math.nan if value is None else float(value)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value
