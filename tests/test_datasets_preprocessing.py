"""Preprocessing: time sort, duplicates, k-core, remapping, vocabulary, report."""

import json

import numpy as np
import pandas as pd
import pytest

from keras_fame.datasets import (
    Vocabulary,
    from_interactions,
    k_core_mask,
    preprocess_interactions,
)

# A log with string ids, a time tie (alice: apple and plum at t=3, file order
# apple first), an exact duplicate (alice, pear, 1) and a k-core cascade:
# kiwi occurs once (round 1), which leaves carol with one item (round 2).
LOG = """user_id,item_id,timestamp
alice,apple,3
alice,pear,1
bob,pear,5
alice,plum,3
bob,plum,2
alice,pear,1
carol,kiwi,1
bob,apple,7
carol,apple,2
"""


def test_csv_log_round_trip_hand_computed(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    ds = from_interactions(path, min_count=2)

    # alice: pear(1) apple(3) plum(3, tie: after apple); bob: plum(2) pear(5) apple(7)
    # item ids by first appearance: pear=1, apple=2, plum=3
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [3, 1, 2]]
    assert ds.user_ids.tolist() == ["alice", "bob"]
    assert dict(ds.vocabulary) == {"pear": 1, "apple": 2, "plum": 3}
    assert ds.num_items == 3 and ds.name == "log.csv"

    report = ds.report
    assert (report.input_interactions, report.input_users, report.input_items) == (
        9,
        3,
        4,
    )
    assert (report.output_interactions, report.output_users, report.output_items) == (
        6,
        2,
        3,
    )
    steps = [(r.step, r.interactions, r.users, r.items) for r in report.records]
    assert steps == [
        ("duplicates (drop_exact)", 1, 0, 0),
        ("k-core round 1", 1, 0, 1),  # kiwi
        ("k-core round 2", 1, 1, 0),  # carol's last item
    ]
    assert report.dropped_interactions == 3
    assert "k-core round 2" in str(report)
    json.dumps(report.as_dict())  # serialisable


def test_vocabulary_save_and_reload(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    ds = from_interactions(path, min_count=2)
    ds.save_vocabulary(tmp_path / "vocab.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab == ds.vocabulary
    assert vocab.encode(["plum", "pear"]).tolist() == [3, 1]
    assert vocab.decode([2]).tolist() == ["apple"]
    assert vocab.encode(["kiwi"], unknown="zero").tolist() == [0]
    with pytest.raises(
        ValueError, match=r"`unknown` must be one of \('error', 'zero'\)"
    ):
        vocab.encode(["kiwi"], unknown="skip")
    with pytest.raises(KeyError, match="'kiwi' is not in the vocabulary"):
        vocab.encode(["kiwi"])
    with pytest.raises(ValueError, match=r"model ids must lie in \[1, 3\]"):
        vocab.decode([0])


def test_vocabulary_integer_ids_round_trip(tmp_path):
    vocab = Vocabulary([30, 10, 20], user_ids=[7, 8])
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again[10] == 2 and again.item_ids.dtype == np.int64
    assert again.user_ids.tolist() == [7, 8]
    assert not again.is_identity and Vocabulary.identity(3).is_identity


def test_vocabulary_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary file not found"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"items": [1]}')
    with pytest.raises(ValueError, match=r"bad\.json: not a keras_fame vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def frame(users, items, times):
    return pd.DataFrame({"user": users, "item": items, "time": times})


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("keep", [[1, 1, 1, 2, 1]]),
        ("drop_exact", [[1, 1, 2, 1]]),  # (u, 10, t=2) repeated exactly
        ("drop_consecutive", [[1, 2, 1]]),
        ("keep_first", [[1, 2]]),
    ],
)
def test_duplicate_policies(policy, expected):
    log = frame([0, 0, 0, 0, 0], [10, 10, 20, 10, 10], [1, 2, 3, 4, 2])
    # sorted by time: 10@1 10@2 10@2(dup) 20@3 10@4
    result = preprocess_interactions(log, min_count=None, duplicates=policy)
    seqs = np.split(result.items, result.offsets[1:-1])
    assert [s.tolist() for s in seqs] == expected
    kept = result.report.output_interactions
    assert kept + result.report.dropped_interactions == 5


def test_bad_duplicate_policy():
    with pytest.raises(
        ValueError, match=r"`duplicates` must be one of .*Received: duplicates='x'"
    ):
        preprocess_interactions(frame([1], [1], [1]), duplicates="x")


def test_k_core_iterates_to_a_fixed_point():
    # user 0: items a, b; user 1: a, c; user 2: a, b; 2-core on items removes c,
    # then user 1 has 1 item and goes; then a has 2 users -> stable.
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 2, 0, 1])
    keep, rounds = k_core_mask(users, items, 2, 2)
    assert keep.tolist() == [True, True, False, False, True, True]
    assert len(rounds) == 2
    counts_u = np.bincount(users[keep])
    counts_i = np.bincount(items[keep])
    assert counts_u[counts_u > 0].min() >= 2 and counts_i[counts_i > 0].min() >= 2


def test_separate_user_and_item_thresholds():
    log = frame([1, 1, 1, 2], ["a", "b", "a", "a"], [1, 2, 3, 1])
    result = preprocess_interactions(
        log, min_count=None, min_user_count=2, min_item_count=1
    )
    assert result.vocabulary.user_ids.tolist() == [1]
    assert result.items.tolist() == [1, 2, 1]


def test_everything_filtered_is_an_error():
    with pytest.raises(ValueError, match=r"no interactions left after preprocessing"):
        preprocess_interactions(frame([1, 2], ["a", "b"], [1, 2]), min_count=5)


def test_item_attributes_are_remapped():
    log = frame(["u", "u", "u"], ["x", "y", "z"], [3, 1, 2])
    ds = from_interactions(
        log.rename(columns={"user": "user_id", "item": "item_id", "time": "timestamp"}),
        min_count=None,
        item_attributes={"x": [7], "y": [8], "gone": [9]},
    )
    # time order y, z, x -> ids y=1, z=2, x=3
    assert ds.item_attributes == {1: [8], 3: [7]}


def test_report_warns_about_users_too_short_for_evaluation():
    log = pd.DataFrame(
        {"user_id": [1, 1, 2, 2, 2], "item_id": [1, 2, 1, 2, 3], "timestamp": 0}
    )
    with pytest.warns(UserWarning, match="fewer than 3 items"):
        ds = from_interactions(log, min_count=None)
    assert any("fewer than 3 items" in n for n in ds.report.notes)
