"""Atomic checkpoints in a run directory.

Layout::

    run_dir/
      latest                  the name of the newest complete checkpoint (replaced atomically)
      checkpoint-000012/      one complete checkpoint (written under a temporary name, renamed)
      checkpoint-000010/

A checkpoint is written to a temporary folder, flushed to disk, then renamed into place, and only
then does ``latest`` point at it; a crash at any moment leaves the previous checkpoint complete
and ``latest`` naming it. (Saving the same update twice swaps the folders; a crash in between
leaves ``latest`` naming a missing folder, and :func:`resolve_checkpoint` falls back to the
newest complete one.) Temporary folders of processes that died are removed on the next save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

LATEST = "latest"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the agent; the message names the file."""


def write_checkpoint(
    run_dir: str | Path, name: str, write: Callable[[Path], None], keep: int = 2
) -> Path:
    """Write a checkpoint ``run_dir/name`` with ``write(folder)``, atomically; keep the newest
    ``keep`` checkpoints. Returns the checkpoint's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers_of_dead_processes(run_dir)
    temporary = run_dir / f".{name}.tmp-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    write(temporary)
    for file in temporary.iterdir():
        _fsync(file)
    final = run_dir / name
    if final.exists():  # the same update saved twice: swap the new one in
        replaced = run_dir / f".{name}.old-{os.getpid()}"
        os.replace(final, replaced)
        os.replace(temporary, final)
        shutil.rmtree(replaced)
    else:
        os.replace(temporary, final)
    _fsync(run_dir)
    pointer = run_dir / f".{LATEST}.tmp-{os.getpid()}"
    pointer.write_text(name + "\n")
    _fsync(pointer)
    os.replace(pointer, run_dir / LATEST)
    _fsync(run_dir)
    _prune(run_dir, keep, current=name)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: a run directory (its ``latest``) or a checkpoint.

    Raises:
        CheckpointError: nothing loadable there.
    """
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    pointer = path / LATEST
    if pointer.is_file():
        checkpoint = path / pointer.read_text().strip()
        if (checkpoint / STATE_FILE).is_file():
            return checkpoint
        complete = sorted(p for p in path.glob("checkpoint-*") if (p / STATE_FILE).is_file())
        if not complete:
            raise CheckpointError(
                f"{pointer} names {checkpoint}, which has no {STATE_FILE}, and {path} holds no "
                "other complete checkpoint"
            )
        warnings.warn(
            f"{pointer} names {checkpoint.name}, which is incomplete (a save was interrupted); "
            f"loading {complete[-1].name}, the newest complete checkpoint",
            stacklevel=2,
        )
        return complete[-1]
    raise CheckpointError(
        f"{path} is neither a checkpoint (no {STATE_FILE}) nor a run directory (no {LATEST}); "
        "pass the folder given to agent.save() or config.checkpoint_dir"
    )


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's ``state.json``."""
    file = checkpoint / STATE_FILE
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file} is unreadable or corrupt: {error}") from error


def save_tensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Write tensors with safetensors (copied to contiguous CPU tensors)."""
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(file))


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt file raises :class:`CheckpointError`."""
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is corrupt: {error}") from error


def load_into_parameters(parameters: dict[str, torch.nn.Parameter], file: Path) -> None:
    """Copy the tensors of ``file`` into ``parameters`` (same names and shapes, or an error
    naming the file and the first mismatch)."""
    tensors = load_tensors(file)
    missing = sorted(set(parameters) - set(tensors))
    unexpected = sorted(set(tensors) - set(parameters))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not fit this model: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; load it with the model (and LoRA / frozen-layer setup) it was "
            "trained with"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            tensor = tensors[name]
            if tensor.shape != parameter.shape:
                raise CheckpointError(
                    f"{file}: {name} has shape {tuple(tensor.shape)}, the model's is "
                    f"{tuple(parameter.shape)}; it was saved from another model"
                )
            parameter.copy_(tensor.to(parameter.device, parameter.dtype))


_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(\d+)$")


def _remove_leftovers_of_dead_processes(run_dir: Path) -> None:
    """Delete the temporary folders and files of saves whose process no longer runs."""
    for entry in run_dir.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or int(match.group(2)) == os.getpid() or _is_running(int(match.group(2))):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _prune(run_dir: Path, keep: int, current: str) -> None:
    checkpoints = sorted(p for p in run_dir.glob("checkpoint-*") if p.is_dir())
    for old in checkpoints[:-keep]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (folders: where the platform allows it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
