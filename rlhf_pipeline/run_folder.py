"""A pipeline's run folder: its settings and which stages are done, so that a rerun resumes."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_pipeline.config import DemoConfig

RUN_FILE = "run.json"
#: Settings that do not change any stage's result: they may differ when a run is resumed.
RUNTIME_FIELDS = frozenset({"out", "device", "progress_bar", "budget_minutes"})


class RunFolder:
    """``run.json`` records the settings and, per finished stage, its wall time and figures.

    Opening a folder that holds a run with other settings raises (``overwrite=True`` starts
    the folder afresh instead). Files are written atomically (temp file, then rename).
    """

    def __init__(self, config: DemoConfig, overwrite: bool = False) -> None:
        self.path = Path(config.out)
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        settings = asdict(config)
        run_file = self.path / RUN_FILE
        if run_file.is_file():
            try:
                self.record = json.loads(run_file.read_text())
                saved = self.record["config"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{run_file} is not a run record ({error}); pass --overwrite to start "
                    "the folder afresh"
                ) from error
            changed = sorted(
                name
                for name in set(settings) | set(saved)
                if name not in RUNTIME_FIELDS and settings.get(name) != saved.get(name)
            )
            if changed:
                details = ", ".join(
                    f"{name}: {saved.get(name)!r} -> {settings.get(name)!r}" for name in changed
                )
                raise ValueError(
                    f"{self.path} holds a run with other settings ({details}); resume it with "
                    "the same settings, choose another --out, or pass --overwrite"
                )
            self.record["config"] = settings
        else:
            self.record = {"config": settings, "stages": {}}
        self._save()

    def file(self, name: str) -> Path:
        """A path inside the run folder."""
        return self.path / name

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished in an earlier or this run."""
        return stage in self.record["stages"]

    def stage(self, stage: str) -> dict[str, Any]:
        """The record of a finished stage."""
        return self.record["stages"][stage]

    def finish(self, stage: str, seconds: float, **figures: Any) -> None:
        """Mark ``stage`` done with its wall time and figures."""
        self.record["stages"][stage] = {"seconds": round(seconds, 2), **figures}
        self._save()

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``data`` as JSON under the run folder, atomically."""
        return write_text_atomic(self.file(name), json.dumps(data, indent=1) + "\n")

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the run folder (errors name the file)."""
        path = self.file(name)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path} is missing or corrupt ({error}); pass --overwrite to redo the run"
            ) from error

    def _save(self) -> None:
        self.write_json(RUN_FILE, self.record)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text)
    os.replace(staging, path)
    return path
