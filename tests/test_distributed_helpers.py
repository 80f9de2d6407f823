"""Data parallelism in one process: the helpers are no-ops, a half-launched process is told
what to do, and the command line speaks once for all processes. (The real multi-process runs
are in ``test_distributed.py``, in make test-all.)"""

from __future__ import annotations

import pytest
from helpers import run_cli

from rlhf_env.distributed import (
    DistributedContext,
    current_context,
    init_distributed,
    rank_seed,
    shard,
)


def test_one_process_context_and_helpers():
    context = init_distributed()
    assert context == current_context() and not context.enabled and context.is_main
    assert shard([1, 2, 3]) == [1, 2, 3]
    assert shard([1, 2, 3, 4, 5], DistributedContext(rank=1, world_size=2)) == [2, 4]
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        shard([1, 2], DistributedContext(rank=0, world_size=4))


def test_rank_seeds_are_distinct_reproducible_and_rank_zero_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    seeds = [rank_seed(7, rank) for rank in range(8)]
    assert len(set(seeds)) == 8 and seeds == [rank_seed(7, rank) for rank in range(8)]
    assert rank_seed(8, 1) != rank_seed(7, 1)


def test_a_launched_process_that_did_not_join_the_group_is_told_how(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"call rlhf_env\.distributed\.init_distributed"):
        current_context()


def test_one_process_commands_refuse_to_run_once_per_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    status, _, stderr = run_cli("demo", "--smoke", "--out", "unused")
    assert status == 1 and "demo runs in one process" in stderr


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_configuration_error_is_printed_once_and_fails_every_process(monkeypatch, rank):
    """Under torchrun every process exits non-zero; rank 0 alone says why (a bad agent
    setting, and a bad option)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    bad_value = ("train", "--agent", "ppo", "--out", "unused", "--reward", "vader",
                 "--policy", "tiny-missing", "--learning-rate", "-1")  # fmt: skip
    bad_option = ("train", "--no-such-option")
    for argv, code in ((bad_value, 1), (bad_option, 2)):
        status, stdout, stderr = run_cli(*argv)
        assert status == code
        if rank == "0":
            assert "error" in stderr
        else:
            assert stderr == stdout == ""
