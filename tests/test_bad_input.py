"""Issue 39, cases 6 and 7: logs and attributes that used to be read silently wrong.

Every test here failed before the fix: the log was read with a changed column
type, a wrong line or no file in the message, or the attributes matched
nothing without a word.
"""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from keras_fame.datasets import (
    SequenceDataset,
    from_interactions,
    preprocess_interactions,
    read_interactions,
    read_item_attributes,
    read_sequence_file,
)

HEADER = "user_id,item_id,timestamp\n"


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def where(path, line, column=None):
    """The start of an error message: `path, line N[, column 'c']`."""
    text = f"{path}, line {line}"
    if column is not None:
        text += f", column {column!r}"
    return re.escape(text)


# ------------------------------------------------ 6. ids: missing, 6.5, 10**20


@pytest.mark.parametrize("cell", ["NaN", "NA", "nan", "null", "None", "N/A"])
@pytest.mark.parametrize("id_type", ["auto", "int"])
def test_missing_value_token_in_integer_id_column_is_an_error(tmp_path, cell, id_type):
    # Before: the whole column became strings and the row was later dropped
    # by the k-core.
    path = write(tmp_path, "log.csv", HEADER + f"1,2,3\n1,{cell},4\n2,3,5\n")
    with pytest.raises(
        ValueError,
        match=where(path, 3) + re.escape(f": missing value {cell!r} in id column"),
    ):
        read_interactions(path, id_type=id_type)
    with pytest.raises(ValueError, match=where(path, 3) + ".*'item_id'"):
        from_interactions(path, min_count=None, id_type=id_type)


def test_missing_value_token_is_kept_with_a_warning_under_id_type_str(tmp_path):
    path = write(tmp_path, "log.csv", HEADER + "1,2,3\n1,NA,4\n")
    with pytest.warns(UserWarning, match=where(path, 3, "item_id") + ": 'NA'"):
        frame = read_interactions(path, id_type="str")
    assert frame["item"].tolist() == ["2", "NA"]


def test_fractional_number_in_integer_id_column_is_an_error(tmp_path):
    # Before: read as strings ('2', '6.5', '3') without a word.
    path = write(tmp_path, "log.csv", HEADER + "1,2,3\n1,6.5,4\n2,3,5\n")
    with pytest.raises(ValueError, match=where(path, 3, "item_id") + ".*'6.5'"):
        read_interactions(path)
    with pytest.raises(ValueError, match=where(path, 3, "item_id") + ".*'6.5'"):
        read_interactions(path, id_type="int")
    # Whole numbers written as floats are numbers, not integer ids, either.
    path = write(tmp_path, "floats.csv", HEADER + "1,2.0,3\n1,3.0,4\n")
    with pytest.raises(ValueError, match=where(path, 2, "item_id") + ".*'2.0'"):
        read_interactions(path)
    assert read_interactions(path, id_type="str")["item"].tolist() == ["2.0", "3.0"]


def test_integers_mixed_with_text_are_strings_with_a_warning(tmp_path):
    # Before: strings without a word; vocabulary[2] then raised KeyError.
    path = write(tmp_path, "log.csv", HEADER + "1,2,3\n1,3,4\n2,x9,5\n")
    with pytest.warns(UserWarning, match=where(path, 4, "item_id") + ": 'x9'"):
        frame = read_interactions(path)
    assert frame["item"].tolist() == ["2", "3", "x9"]
    assert frame["user"].tolist() == [1, 1, 2]  # the other column is unaffected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_interactions(path, id_type="str")["item"].tolist() == [
            "2",
            "3",
            "x9",
        ]


def test_id_beyond_int64_is_an_error_naming_file_column_and_line(tmp_path):
    # Before: OverflowError("Python int too large to convert to C long").
    big = str(10**20)
    path = write(tmp_path, "log.csv", HEADER + f"1,2,3\n1,{big},4\n")
    with pytest.raises(
        ValueError, match=where(path, 3, "item_id") + f".*{big}.*id_type='str'"
    ):
        read_interactions(path)
    assert read_interactions(path, id_type="str")["item"].tolist() == ["2", big]
    edge = str(2**63 - 1)  # the largest int64 still reads as an integer
    path = write(tmp_path, "edge.csv", HEADER + f"1,{edge},3\n-1,{-(2**63)},4\n")
    frame = read_interactions(path)
    assert frame["item"].tolist() == [2**63 - 1, -(2**63)]
    # Before: a float 1e20 in a DataFrame became -2**63 silently.
    log = pd.DataFrame({"user_id": [1, 1], "item_id": [2.0, 1e20], "timestamp": 0})
    with pytest.raises(ValueError, match=r"DataFrame, row 1, column 'item_id'"):
        read_interactions(log)


def test_clean_logs_still_read_without_a_warning(tmp_path):
    path = write(tmp_path, "log.csv", HEADER + "1,-2,3\n10,0,4\n")
    strings = write(tmp_path, "s.csv", HEADER + "u1,B00X,3\nu2,0439,4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_interactions(path)
        assert frame["item"].dtype == np.int64 and frame["item"].tolist() == [-2, 0]
        assert read_interactions(strings)["item"].tolist() == ["B00X", "0439"]


# ------------------------------------------------------------ 6. timestamps


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_infinite_timestamp_is_an_error(tmp_path, cell):
    # Before: accepted as float inf and sorted last.
    path = write(tmp_path, "log.csv", HEADER + f"1,2,3\n1,3,{cell}\n2,3,5\n")
    with pytest.raises(ValueError, match=where(path, 3, "timestamp") + ".*not finite"):
        read_interactions(path)


def test_infinite_or_nan_timestamp_in_a_dataframe_is_an_error():
    log = pd.DataFrame({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [1, np.inf]})
    with pytest.raises(ValueError, match=r"DataFrame, row 1, column 'timestamp'"):
        read_interactions(log)
    log["timestamp"] = [np.nan, 1.0]
    with pytest.raises(ValueError, match=r"DataFrame, row 0: missing value in time"):
        read_interactions(log)


def test_date_among_numeric_timestamps_names_its_own_line(tmp_path):
    # Before: the error named line 2, whose timestamp 3 is valid.
    path = write(tmp_path, "log.csv", HEADER + "1,2,3\n1,3,4\n2,3,2024-01-01\n1,4,5\n")
    with pytest.raises(
        ValueError, match=where(path, 4, "timestamp") + ".*got '2024-01-01'"
    ):
        read_interactions(path)
    # And the other way round: one number among dates.
    path = write(
        tmp_path, "dates.csv", HEADER + "1,2,2024-01-01\n1,3,2024-01-02\n1,4,17\n"
    )
    with pytest.raises(ValueError, match=where(path, 4, "timestamp") + ".*got '17'"):
        read_interactions(path)


def test_missing_value_token_in_time_column_is_named_missing(tmp_path):
    path = write(tmp_path, "log.csv", HEADER + "1,2,3\n1,3,NA\n")
    with pytest.raises(
        ValueError, match=where(path, 3) + ": missing value in time column"
    ):
        read_interactions(path)


# --------------------------------------------------------------- 6. encoding


def test_latin1_byte_names_file_and_line_and_suggests_encoding(tmp_path):
    # Before: UnicodeDecodeError without file or line.
    path = write(tmp_path, "log.csv", HEADER.encode() + b"1,2,3\n1,caf\xe9,4\n")
    with pytest.raises(ValueError, match=where(path, 3) + r".*encoding="):
        read_interactions(path)
    with pytest.raises(ValueError, match=where(path, 3)):
        from_interactions(path, min_count=None)
    frame = read_interactions(path, encoding="latin-1")
    assert frame["item"].tolist() == ["2", "café"]  # strings: 'café' is no int
    with pytest.raises(ValueError, match=r"`encoding` must be .*encoding='nope'"):
        read_interactions(path, encoding="nope")


def test_non_utf8_sequence_and_attribute_files_name_file_and_line(tmp_path):
    path = write(tmp_path, "seq.txt", b"1 2 3\n2 3 \xff\n")
    with pytest.raises(ValueError, match=where(path, 2)):
        read_sequence_file(path)
    path = write(tmp_path, "a.json", b'{"1": [1],\n "2": [2]}\n\xe9')
    with pytest.raises(ValueError, match=where(path, 3)):
        read_item_attributes(path)


# ---------------------------------------------------------------- 6. k-core


def _log(n_users=3, n_items=4):
    return pd.DataFrame(
        {
            "user": np.repeat(np.arange(n_users), n_items),
            "item": np.tile(np.arange(n_items), n_users),
            "time": np.arange(n_users * n_items),
        }
    )


@pytest.mark.parametrize(
    "argument, value",
    [
        ("min_count", -3),
        ("min_count", 0),
        ("min_count", 2.5),
        ("min_count", 5.0),
        ("min_count", True),
        ("min_count", "5"),
        ("min_user_count", -1),
        ("min_user_count", 2.5),
        ("min_item_count", 2.5),
        ("min_item_count", False),
    ],
)
def test_k_core_thresholds_must_be_positive_integers(argument, value):
    # Before: -3 silently disabled the filter, 2.5 became 2, True became 1.
    message = re.escape(
        f"`{argument}` must be a positive integer or None. Received: "
        f"{argument}={value!r}"
    )
    with pytest.raises(ValueError, match=message):
        preprocess_interactions(_log(), **{argument: value})
    log = _log().rename(columns={"user": "user_id", "item": "item_id"})
    with pytest.raises(ValueError, match=message):
        from_interactions(log, time_col="time", **{argument: value})


def test_valid_k_core_thresholds_still_work():
    # 3 users x 4 items: every user has 4 and every item 3 interactions.
    kept = preprocess_interactions(_log(), min_count=3).report.output_interactions
    assert kept == 12
    result = preprocess_interactions(
        _log(), min_count=5, min_user_count=np.int64(4), min_item_count=3
    )
    assert result.report.output_interactions == 12
    assert preprocess_interactions(_log(), min_count=1).report.records == []
    with pytest.raises(ValueError, match=r"no interactions left"):
        preprocess_interactions(_log(), min_count=4)  # items have only 3


# ------------------------------------------------------ 7. attributes by text


def _attribute_log():
    # u1 sees 20, 30, 10 in time order -> model ids 20=1, 30=2, 10=3.
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "item_id": [10, 20, 30, 20, 30, 10],
            "timestamp": [3, 1, 2, 1, 2, 3],
        }
    )


def test_json_string_keys_match_integer_item_ids():
    # Before: 0 of the keys matched and the dataset had no attributes.
    attributes = json.loads('{"10": [7], "20": [8, 9], "99": [5]}')
    ds = from_interactions(_attribute_log(), min_count=None, item_attributes=attributes)
    assert ds.vocabulary[20] == 1 and ds.vocabulary[10] == 3
    assert ds.item_attributes == {3: [7], 1: [8, 9]}
    assert any("2 of 3 keys match" in note for note in ds.report.notes)


def test_integer_keys_match_string_item_ids(tmp_path):
    path = write(tmp_path, "a.json", '{"10": [7], "30": [6]}')
    attributes = read_item_attributes(path)  # int keys
    log = tmp_path / "log.csv"
    _attribute_log().to_csv(log, index=False)
    ds = from_interactions(
        log, min_count=None, id_type="str", item_attributes=attributes
    )
    assert ds.vocabulary["30"] == 2
    assert ds.item_attributes == {3: [7], 2: [6]}


def test_attributes_matching_no_kept_item_are_an_error():
    # Before: the dataset quietly had no attributes.
    with pytest.raises(
        ValueError,
        match=r"none of its 2 keys matches one of the 3 items.*'B01' \(str\).*"
        r"10 \(int\)",
    ):
        from_interactions(
            _attribute_log(), min_count=None, item_attributes={"B01": [1], "B02": [2]}
        )
    with pytest.raises(ValueError, match=r"none of its 0 keys"):
        from_interactions(_attribute_log(), min_count=None, item_attributes={})


def test_item_attributes_must_be_a_mapping_of_lists():
    with pytest.raises(ValueError, match=r"`item_attributes` must be a dict.*list"):
        from_interactions(_attribute_log(), min_count=None, item_attributes=[[1]])
    with pytest.raises(ValueError, match=r"item '10': expected a list of attribute"):
        from_interactions(
            _attribute_log(), min_count=None, item_attributes={"10": "abc"}
        )
    # A pandas Series indexed by item id works like a dict.
    series = pd.Series({"10": [7], "30": [6]})
    ds = from_interactions(_attribute_log(), min_count=None, item_attributes=series)
    assert ds.item_attributes == {3: [7], 2: [6]}


def test_two_keys_naming_one_item_are_an_error():
    with pytest.raises(ValueError, match=r"keys '10' and 10 both name item '10'"):
        from_interactions(
            _attribute_log(), min_count=None, item_attributes={"10": [1], 10: [2]}
        )


def test_attribute_json_refuses_repeated_and_zero_padded_keys(tmp_path):
    # Before: JSON kept the last of two entries, and '007' silently became 7.
    path = write(tmp_path, "a.json", '{"4": [1], "4": [2]}')
    with pytest.raises(ValueError, match=re.escape(f"{path}: key '4' appears more")):
        read_item_attributes(path)
    path = write(tmp_path, "b.json", '{"007": [1]}')
    with pytest.raises(ValueError, match=re.escape(f"{path}: key '007'")):
        read_item_attributes(path)


# ----------------------------------------------- 7. alignment over nothing


NUM_ITEMS = 12


@pytest.fixture(scope="module")
def fame_setup():
    from keras_fame.models import FAME

    rng = np.random.default_rng(0)
    sequences = [rng.permutation(NUM_ITEMS)[:6] + 1 for _ in range(20)]
    data = SequenceDataset(sequences, num_items=NUM_ITEMS)
    model = FAME(NUM_ITEMS, num_experts=2, max_len=8, hidden_dim=8, num_heads=2)
    return data, model


def test_alignment_without_attributes_is_an_error(fame_setup):
    from keras_fame.inspection import head_facet_alignment

    data, model = fame_setup
    assert data.item_attributes is None
    # Before: None gave a shape error, {} agreement 0 and chance 0.
    with pytest.raises(ValueError, match=r"`attributes` is None.*pass a dict"):
        head_facet_alignment(model, data, data.item_attributes)
    with pytest.raises(ValueError, match=r"holds no attribute.*pass a dict"):
        head_facet_alignment(model, data, {})
    with pytest.raises(ValueError, match=r"column 1 is -1 \(unknown\) for every"):
        facets = np.zeros((NUM_ITEMS + 1, 2), int)
        facets[:, 1] = -1
        head_facet_alignment(model, data, facets)
    with pytest.raises(ValueError, match=r"none of its 2 keys is a model item id"):
        head_facet_alignment(model, data, {100: [1], 200: [2]})


def test_alignment_when_max_attribute_share_excludes_every_attribute(fame_setup):
    from keras_fame.inspection import head_facet_alignment

    data, model = fame_setup
    # Three "genres" over 12 items, each on 4 or more items (> 10%).
    genres = {i: [i % 3] for i in range(1, NUM_ITEMS + 1)}
    with pytest.raises(
        ValueError,
        match=r"`max_attribute_share=0.1` ignores every one of the 3 attributes.*"
        r"max_attribute_share=0.334 or more",
    ):
        head_facet_alignment(model, data, genres, k=3)
    out = head_facet_alignment(model, data, genres, k=3, max_attribute_share=0.334)
    # Chance is the share of the catalogue in the last item's genre: 4 / 12.
    assert out["chance"][0] == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match=r"`max_attribute_share` must be a number"):
        head_facet_alignment(model, data, genres, max_attribute_share=0)
