"""Readers: every bad-input case fails with a message naming file, line, column."""

import re

import numpy as np
import pandas as pd
import pytest

from keras_fame.datasets import (
    parse_sequence_lines,
    read_interactions,
    read_item_attributes,
    read_movielens_csv,
    read_movielens_dat,
    read_sequence_file,
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------- sequence format


def test_sequence_file_roundtrip(tmp_path):
    path = write(tmp_path, "Mini.txt", "1 1 2 3\n2\t3 2\n\n7 4 5 6 1\n")
    users, seqs = read_sequence_file(path)
    assert users.tolist() == [1, 2, 7]
    assert [s.tolist() for s in seqs] == [[1, 2, 3], [3, 2], [4, 5, 6, 1]]


def test_sequence_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.txt"))):
        read_sequence_file(tmp_path / "nope.txt")


def test_sequence_file_empty(tmp_path):
    path = write(tmp_path, "Empty.txt", "\n  \n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: file is empty")):
        read_sequence_file(path)


def test_sequence_file_non_integer_item(tmp_path):
    path = write(tmp_path, "Bad.txt", "1 1 2 3\n2 4 5\n3 4 abc 6\n")
    expected = (
        f"{path}, line 3, field 3: expected a non-negative integer item id, got 'abc'"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_sequence_file(path)


def test_sequence_file_non_integer_user(tmp_path):
    path = write(tmp_path, "Bad.txt", "u1 1 2 3\n")
    with pytest.raises(ValueError, match=r"line 1, field 1: .*user id, got 'u1'"):
        read_sequence_file(path)


def test_sequence_file_line_without_items(tmp_path):
    path = write(tmp_path, "Bad.txt", "1 1 2\n2\n")
    with pytest.raises(
        ValueError, match=r"line 2: malformed line: expected 'user item"
    ):
        read_sequence_file(path)


def test_sequence_file_padding_id_and_duplicate_user():
    with pytest.raises(
        ValueError, match=r"<s>, line 1, field 3: item id 0 is reserved"
    ):
        parse_sequence_lines(["1 4 0 2"], source="<s>")
    with pytest.raises(ValueError, match=r"line 3: user 1 already appeared on line 1"):
        parse_sequence_lines(["1 4 2", "2 3 4", "1 5 6"])


# --------------------------------------------------------------- attributes


def test_item_attributes(tmp_path):
    path = write(tmp_path, "a.json", '{"4": [1, 2, 3], "83": [4]}')
    assert read_item_attributes(path) == {4: [1, 2, 3], 83: [4]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"file is empty"),
        ('{"4": [1, 2],\n "5": [3,]}', r"line 2, column \d+: invalid JSON"),
        ("[1, 2]", r"expected a JSON object"),
        ('{"x4": [1]}', r"key 'x4': expected an integer item id"),
        ('{"4": [1, "b"]}', r"item 4: expected a list of integer attribute ids"),
    ],
)
def test_item_attributes_errors(tmp_path, text, message):
    path = write(tmp_path, "a.json", text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        read_item_attributes(path)


def test_item_attributes_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="item-attribute file not found"):
        read_item_attributes(tmp_path / "x.json")


# ------------------------------------------------------------ generic logs


def test_csv_string_ids_and_dates(tmp_path):
    path = write(
        tmp_path,
        "log.csv",
        "uid,iid,when\nu1,007,2024-01-02\nu1,7,2024-01-01 10:00\nu2,x,2024-01-03\n",
    )
    frame = read_interactions(path, "uid", "iid", "when")
    assert frame["user"].tolist() == ["u1", "u1", "u2"]
    assert frame["item"].tolist() == ["007", "7", "x"]  # '007' != '7': kept as str
    assert frame["time"].is_monotonic_increasing is False
    assert frame["time"].iloc[1] < frame["time"].iloc[0]


def test_tsv_integer_ids(tmp_path):
    path = write(
        tmp_path, "log.tsv", "user_id\titem_id\ttimestamp\n1\t10\t5\n2\t11\t6\n"
    )
    frame = read_interactions(path)
    assert frame["user"].dtype == np.int64 and frame["item"].tolist() == [10, 11]
    assert frame["time"].tolist() == [5, 6]


def test_parquet_and_dataframe(tmp_path):
    log = pd.DataFrame({"u": [3, 3, 4], "i": ["a", "b", "a"], "t": [1.5, 2.5, 0.5]})
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    for source in (path, log):
        frame = read_interactions(source, "u", "i", "t")
        assert frame["user"].tolist() == [3, 3, 4]
        assert frame["item"].tolist() == ["a", "b", "a"]
        assert frame["time"].tolist() == [1.5, 2.5, 0.5]


def test_time_col_none_uses_row_order():
    frame = read_interactions(
        pd.DataFrame({"user_id": [1, 1], "item_id": [5, 6]}), time_col=None
    )
    assert frame["time"].tolist() == [0, 1]


def test_log_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"interaction log not found: .*log\.csv"
    ):
        read_interactions(tmp_path / "log.csv")


def test_log_empty_file(tmp_path):
    path = write(tmp_path, "log.csv", "")
    with pytest.raises(ValueError, match=re.escape(f"{path}: file is empty")):
        read_interactions(path)


def test_log_header_only(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(ValueError, match=r"no interactions"):
        read_interactions(path)


def test_log_missing_column(tmp_path):
    path = write(tmp_path, "log.csv", "user,item_id,timestamp\n1,2,3\n")
    expected = (
        f"{path}: column 'user_id' (argument `user_col`) not found; available "
        "columns: ['user', 'item_id', 'timestamp']"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_interactions(path)


def test_log_missing_column_dataframe():
    with pytest.raises(
        ValueError, match=r"DataFrame: column 'ts' \(argument `time_col`\)"
    ):
        read_interactions(pd.DataFrame({"user_id": [1], "item_id": [2]}), time_col="ts")


def test_log_malformed_line(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n1,3,4,9\n")
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r": malformed line: .*line 3"
    ):
        read_interactions(path)


def test_log_short_line_is_missing_value(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n\n1,3\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}, line 4: missing value in time column 'timestamp'"),
    ):
        read_interactions(path)


def test_log_missing_id(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n,3,4\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}, line 3: missing value in id column 'user_id'"),
    ):
        read_interactions(path)


def test_log_non_integer_id_when_integers_required(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n1,x9,4\n")
    expected = f"{path}, line 3, column 'item_id': expected an integer id, got 'x9'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_interactions(path, id_type="int")
    with pytest.raises(
        ValueError, match=r"`id_type` must be one of .*id_type=<class 'int'>"
    ):
        read_interactions(path, id_type=int)


def test_log_fractional_id_in_dataframe():
    log = pd.DataFrame({"user_id": [1.0, 2.5], "item_id": [1, 2], "timestamp": [0, 1]})
    with pytest.raises(ValueError, match=r"DataFrame, row 1, column 'user_id'"):
        read_interactions(log)


def test_log_bad_timestamp(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n1,3,soon\n")
    expected = f"{path}, line 3, column 'timestamp': expected a numeric timestamp or a date, got 'soon'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_interactions(path)


def test_log_unknown_suffix(tmp_path):
    path = write(tmp_path, "log.data", "user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(ValueError, match=r"cannot tell the format"):
        read_interactions(path)
    assert len(read_interactions(path, sep=",")) == 1


def test_log_bad_parquet(tmp_path):
    path = write(tmp_path, "log.parquet", "not parquet")
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot read as Parquet")):
        read_interactions(path)


# --------------------------------------------------------------- MovieLens


def test_movielens_dat(tmp_path):
    path = write(
        tmp_path,
        "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
    )
    frame = read_movielens_dat(path)
    assert frame.columns.tolist() == ["user", "item", "rating", "time"]
    assert frame["item"].tolist() == [1193, 661, 1193]
    assert frame["time"].tolist() == [978300760, 978302109, 978298413]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"file is empty"),
        ("1::2::5::9\n1::3::5\n", r"line 2: malformed line: expected 4 fields"),
        ("1::2::5::9\n1::3::5::9::1\n", r"line 2: malformed line: expected 4 fields"),
        (
            "1::2::5::9\n1::abc::5::9\n",
            r"line 2, column 'item': expected an integer, got 'abc'",
        ),
    ],
)
def test_movielens_dat_errors(tmp_path, text, message):
    path = write(tmp_path, "ratings.dat", text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        read_movielens_dat(path)


def test_movielens_dat_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        read_movielens_dat(tmp_path / "ratings.dat")


def test_movielens_csv(tmp_path):
    path = write(
        tmp_path,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n",
    )
    frame = read_movielens_csv(path)
    assert frame["user"].tolist() == [1, 1]
    assert frame["item"].tolist() == [2, 29]
    assert frame["rating"].tolist() == [3.5, 3.5]
    assert frame["time"].tolist() == [1112486027, 1112484676]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"file is empty"),
        ("userId,rating,timestamp\n1,3,4\n", r"line 1: column 'movieId' not found"),
        ("userId,movieId,rating,timestamp\n", r"no ratings"),
        (
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,4,5\n",
            r"line 3: malformed line",
        ),
        (
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,m2,3,4\n",
            r"line 3, column 'movieId': expected an integer, got 'm2'",
        ),
        (
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,good,4\n",
            r"line 3, column 'rating': expected a number",
        ),
    ],
)
def test_movielens_csv_errors(tmp_path, text, message):
    path = write(tmp_path, "ratings.csv", text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        read_movielens_csv(path)
