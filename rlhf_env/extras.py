"""Optional dependencies: the named extra of the package that brings each, and the error that
says which to install.

The core (the envs and their engines) needs only the package's own requirements; everything
else is an extra (``setup.cfg``): ``sb3`` (stable-baselines3), ``train`` (peft, tensorboard),
``metrics`` (sacrebleu, rouge-score, VADER, TextBlob), ``datasets``, ``gguf``, ``assets``,
``tasks`` (reasoning-gym), ``textarena``, ``dialogue`` (chitchat-dataset) and
``demo`` (the pipeline's plots and config files).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing_extra(module: str, extra: str, needed_for: str) -> MissingExtraError:
    """The error for ``needed_for`` lacking ``module``, which the ``extra`` extra installs."""
    return MissingExtraError(
        f"{needed_for} needs the {module.split('.')[0]!r} package, from the {extra!r} extra: "
        f"pip install 'rlhf_env[{extra}]'"
    )


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(module, extra, needed_for) from error
