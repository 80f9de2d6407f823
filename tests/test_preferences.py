"""Preference pairs: HH-RLHF splitting, record validation, JSONL and datasets loading, CLI."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

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

H, A = "\n\nHuman:", "\n\nAssistant:"


def test_hh_single_turn():
    prompt, chosen, rejected = split_hh_dialogues(f"{H} Hi{A} Hello!", f"{H} Hi{A} Go away.")
    assert (prompt, chosen, rejected) == (f"{H} Hi{A}", " Hello!", " Go away.")


def test_hh_multi_turn_keeps_earlier_turns_in_the_prompt():
    shared = f"{H} Recommend a film{A} Try Heat.{H} Why?{A}"
    prompt, chosen, rejected = split_hh_dialogues(
        shared + " It is tense and well acted.", shared + " It is tense."
    )
    assert prompt == shared
    assert (chosen, rejected) == (" It is tense and well acted.", " It is tense.")


def test_hh_responses_that_share_their_start_are_not_cut_inside_the_response():
    prompt, chosen, rejected = split_hh_dialogues(f"{H} Q{A} I think yes", f"{H} Q{A} I think no")
    assert prompt == f"{H} Q{A}" and chosen == " I think yes" and rejected == " I think no"


def test_hh_without_shared_prefix_gives_an_empty_prompt():
    assert split_hh_dialogues("abc", "xyz") == ("", "abc", "xyz")
    # differing human turns: no marker inside the shared prefix
    prompt, chosen, _ = split_hh_dialogues(f"{H} Hi{A} A", f"{H} Hey{A} B")
    assert prompt == "" and chosen == f"{H} Hi{A} A"


def test_hh_empty_response_is_kept():
    prompt, chosen, rejected = split_hh_dialogues(f"{H} Hi{A}", f"{H} Hi{A} Sure")
    assert (prompt, chosen, rejected) == (f"{H} Hi{A}", "", " Sure")


def test_records_explicit_and_hh():
    explicit = pair_from_record({"prompt": "p", "chosen": "a", "rejected": "b"})
    assert explicit == PreferencePair("p", "a", "b")
    hh = pair_from_record({"chosen": f"{H} Q{A} yes", "rejected": f"{H} Q{A} no"})
    assert hh == PreferencePair(f"{H} Q{A}", " yes", " no")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, r"missing field\(s\) \['rejected'\]"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
        ({"chosen": f"{H} Q{A} x", "rejected": f"{H} Q{A} x"}, "identical"),
        ({"prompt": "p", "chosen": 1, "rejected": "b"}, "'chosen' must be a string"),
        (["not", "a", "dict"], "expected a JSON object"),
    ],
)
def test_bad_records_name_the_record(record, message):
    with pytest.raises(PreferenceDataError, match=f"pairs.jsonl line 3: .*{message}"):
        pair_from_record(record, "pairs.jsonl line 3")


def test_jsonl_round_trip_and_errors(tmp_path):
    pairs = [PreferencePair("p1", "good", "bad"), PreferencePair("p2", "yes", "no")]
    path = write_jsonl_pairs(pairs, tmp_path / "pairs.jsonl")
    assert load_jsonl_pairs(path) == pairs
    assert load_pairs(path) == pairs

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(PreferenceDataError, match=r"empty\.jsonl holds no preference records"):
        load_jsonl_pairs(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(pairs[0].to_record()) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match=r"broken\.jsonl line 2: not valid JSON"):
        load_jsonl_pairs(broken)
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        load_jsonl_pairs(tmp_path / "missing.jsonl")


def test_datasets_local_file_in_hh_format(tmp_path):
    path = tmp_path / "hh.json"
    records = [{"chosen": f"{H} Q{i}{A} good", "rejected": f"{H} Q{i}{A} bad"} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    pairs = load_dataset_pairs(path)
    assert [p.prompt for p in pairs] == [f"{H} Q{i}{A}" for i in range(3)]
    assert {(p.chosen, p.rejected) for p in pairs} == {(" good", " bad")}


def test_cli_data_show_prints_the_pair_side_by_side(tmp_path):
    path = write_jsonl_pairs(
        [PreferencePair("Rate the film.", "A warm, funny story.", "Dull and slow.")],
        tmp_path / "pairs.jsonl",
    )
    status, stdout, stderr = run_cli("data", "show", str(path), "--index", "0")
    assert status == 0, stderr
    assert "Rate the film." in stdout
    line = next(x for x in stdout.splitlines() if "A warm, funny story." in x)
    assert "| Dull and slow." in line  # chosen and rejected on one line, side by side
    status, _, stderr = run_cli("data", "show", str(path), "--index", "5")
    assert status == 2 and "outside the 1 pairs" in stderr
