"""Readers: files and DataFrames in, plain NumPy / pandas values out.

Every reader fails with a `ValueError` (or `FileNotFoundError`) whose message
names the file, the line (or row) and the column that is wrong and what was
expected, e.g. ``ValueError: /data/Beauty.txt, line 3, field 2: expected an
integer item id, got 'abc'``.

Readers never filter or remap anything; that is the job of
`keras_fame.datasets.preprocessing`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from keras_fame.layers._utils import check_choice

PathLike = str | os.PathLike

_INT_TOKEN = re.compile(r"[0-9]+", re.ASCII)
_INT_LINE = re.compile(r"[0-9]+(?:[ \t]+[0-9]+)*", re.ASCII)
_CANONICAL_INT = r"-?[1-9][0-9]*|0"
# A number written with a fraction, an exponent or as infinity ('6.5', '7.0',
# '1e3', 'inf'): never an integer id, whatever its value.
_NON_INTEGER_NUMBER = (
    r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][+-]?[0-9]+"
    r"|[0-9]*\.[0-9]+[eE][+-]?[0-9]+|inf|infinity)"
)
_DIGITS = r"[+-]?[0-9]+"
# Cells that spreadsheets and pandas write for a missing value.
_MISSING_TOKENS = frozenset(
    {
        "nan", "-nan", "+nan", "na", "n/a", "#n/a", "#n/a n/a", "#na", "<na>",
        "null", "none", "nil", "nat", "-1.#ind", "1.#ind", "-1.#qnan", "1.#qnan",
    }
)  # fmt: skip
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_TEXT_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _existing_file(path: PathLike, what: str) -> Path:
    """Returns `path` as a `Path`, or raises a `FileNotFoundError` naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} is not a file: {path}")
    return path


def _decoding_error(path: Path, encoding: str, hint: str = "") -> ValueError:
    """A ValueError naming the first line of `path` that is not `encoding`."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line_number = 0
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as e:
                bad = e.object[e.start : e.end]
                return ValueError(
                    f"{path}, line {line_number}: bytes {bad!r} are not valid "
                    f"{encoding} ({e.reason}){hint}"
                )
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        return ValueError(
            f"{path}, line {line_number}: the file ends inside a {encoding} "
            f"character ({e.reason}){hint}"
        )
    return ValueError(f"{path}: cannot decode the file as {encoding}{hint}")


def _read_text(path: Path) -> str:
    """The UTF-8 text of `path`, or a ValueError naming the undecodable line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _decoding_error(path, "utf-8") from None


# ---------------------------------------------------------------------------
# The published 5-core sequence format: `user item item ...`
# ---------------------------------------------------------------------------


def parse_sequence_lines(
    lines: Iterable[str], source: str = "<sequences>"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Parses lines of the published `user item item ...` sequence format.

    Each non-blank line holds one user: an integer user id followed by that
    user's item ids in time order, separated by spaces or tabs. Blank lines
    are skipped.

    Args:
        lines: the text lines (without or with trailing newlines).
        source: how to name the input in error messages (usually the path).

    Returns:
        A tuple `(user_ids, sequences)`: `user_ids` is an int64 array with one
        entry per line and `sequences` a list of int64 arrays of item ids.

    Raises:
        ValueError: on a non-integer id, a line without items, an item id 0
            (reserved for padding), a user id that appears twice, or when
            there is no non-blank line at all.

    Example:
    >>> users, seqs = parse_sequence_lines(["1 5 6 7", "2 6 7"])
    >>> users.tolist(), [s.tolist() for s in seqs]
    ([1, 2], [[5, 6, 7], [6, 7]])
    """
    user_ids: list[int] = []
    sequences: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    for line_number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if not _INT_LINE.fullmatch(line):
            for field, token in enumerate(line.split(), start=1):
                if not _INT_TOKEN.fullmatch(token):
                    kind = "user id" if field == 1 else "item id"
                    raise ValueError(
                        f"{source}, line {line_number}, field {field}: expected "
                        f"a non-negative integer {kind}, got {token!r}"
                    )
        ids = [int(token) for token in line.split()]
        if len(ids) < 2:
            raise ValueError(
                f"{source}, line {line_number}: malformed line: expected "
                f"'user item [item ...]' (a user id followed by at least one "
                f"item id), got {line!r}"
            )
        user = ids[0]
        if user in first_line:
            raise ValueError(
                f"{source}, line {line_number}: user {user} already appeared on "
                f"line {first_line[user]}; expected one line per user"
            )
        items = np.asarray(ids[1:], dtype=np.int64)
        if items.min() < 1:
            field = 2 + int(np.argmin(items))
            raise ValueError(
                f"{source}, line {line_number}, field {field}: item id 0 is "
                "reserved for padding; expected item ids >= 1"
            )
        first_line[user] = line_number
        user_ids.append(user)
        sequences.append(items)
    if not sequences:
        raise ValueError(
            f"{source}: file is empty; expected one line per user of the form "
            "'user item item ...'"
        )
    return np.asarray(user_ids, dtype=np.int64), sequences


def read_sequence_file(path: PathLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reads a file in the published 5-core sequence format.

    This is the format of the S3-Rec / ICLRec data files (`Beauty.txt`,
    `Sports_and_Outdoors.txt`, `Toys_and_Games.txt`): one line per user,
    `user item item ...`, items in time order, ids starting at 1.

    Args:
        path: path of the text file.

    Returns:
        A tuple `(user_ids, sequences)` as in `parse_sequence_lines`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: on malformed content (see `parse_sequence_lines`), or a
            byte that is not UTF-8 (the message names the line).

    Example:
    >>> users, seqs = read_sequence_file("Beauty.txt")  # doctest: +SKIP
    """
    path = _existing_file(path, "sequence file")
    try:
        with open(path, encoding="utf-8") as f:
            return parse_sequence_lines(f, source=str(path))
    except UnicodeDecodeError:
        raise _decoding_error(path, "utf-8") from None


def parse_item_attributes(text: str, source: str = "<attributes>") -> dict:
    """Parses an item-attribute JSON document (`{"item id": [attr, ...]}`).

    Args:
        text: the JSON text. Keys are item ids written as strings (canonical
            integers: no sign, no leading zeros), values are lists of integer
            attribute ids.
        source: how to name the input in error messages.

    Returns:
        A dict mapping int item id to a list of int attribute ids. Item ids
        are integers here; `from_interactions(item_attributes=...)` matches
        keys to a log's item ids by their text, so the dict also works on a
        log whose item ids were read as strings.

    Raises:
        ValueError: on invalid JSON, a non-object document, a key that is not
            a canonical integer, a key that appears twice or a value that is
            not a list of integers.

    Example:
    >>> parse_item_attributes('{"4": [1, 2], "83": [4]}')
    {4: [1, 2], 83: [4]}
    """
    if not text.strip():
        raise ValueError(
            f"{source}: file is empty; expected a JSON object "
            '{"item id": [attribute ids]}'
        )
    repeated: list[str] = []

    def pairs_to_dict(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                repeated.append(key)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs_to_dict)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{source}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}"
        ) from None
    if repeated:
        raise ValueError(
            f"{source}: key {repeated[0]!r} appears more than once; expected "
            "one entry per item (JSON keeps only the last)"
        )
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: expected a JSON object mapping item ids to attribute "
            f"lists, got a JSON {type(data).__name__}"
        )
    attributes: dict[int, list[int]] = {}
    for key, value in data.items():
        if not _INT_TOKEN.fullmatch(key):
            raise ValueError(
                f"{source}: key {key!r}: expected an integer item id as key"
            )
        if not re.fullmatch(_CANONICAL_INT, key):
            raise ValueError(
                f"{source}: key {key!r}: expected an integer item id written "
                f"without leading zeros ({str(int(key))!r}); item ids are "
                "matched by their text"
            )
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(
                f"{source}: item {key}: expected a list of integer attribute "
                f"ids, got {value!r}"
            )
        attributes[int(key)] = list(value)
    return attributes


def read_item_attributes(path: PathLike) -> dict[int, list[int]]:
    """Reads an item-attribute JSON file (`*_item2attributes.json`).

    Args:
        path: path of the JSON file.

    Returns:
        A dict mapping int item id to a list of int attribute ids.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: on malformed content (see `parse_item_attributes`), or a
            byte that is not UTF-8 (the message names the line).

    Example:
    >>> attrs = read_item_attributes("Beauty_item2attributes.json")  # doctest: +SKIP
    """
    path = _existing_file(path, "item-attribute file")
    return parse_item_attributes(_read_text(path), str(path))


# ---------------------------------------------------------------------------
# Generic interaction logs: CSV / TSV / Parquet / DataFrame
# ---------------------------------------------------------------------------


def _row_label(kind: str, index) -> str:
    """`kind` is 'line' (text file; index = 0-based data row) or 'row'."""
    if kind == "line":
        return f"line {int(index) + 2}"  # +1 for 1-based, +1 for the header
    return f"row {index!r}"


def _shown(value) -> str:
    """`repr` of a cell, with NumPy scalars shown as Python values."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first(mask) -> int:
    """Position of the first true entry of a boolean mask."""
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


class _Cells:
    """A column by position, and how to name a cell in a message."""

    def __init__(self, values: pd.Series, column: str, where: str, kind: str):
        self.labels = values.index
        self.values = values.reset_index(drop=True)
        self.column, self.where, self.kind = column, where, kind

    def at(self, position: int, column: bool = True) -> str:
        """`file, line N[, column 'c']` for the cell at `position`."""
        text = f"{self.where}, {_row_label(self.kind, self.labels[position])}"
        return f"{text}, column {self.column!r}" if column else text


def _check_int64_range(cells: _Cells, text: pd.Series) -> None:
    """Raises on a canonical-integer id outside int64 (e.g. 10**20)."""
    digits = text.str.len() - text.str.startswith("-").astype(int)
    for position in np.flatnonzero(digits.to_numpy() >= 19):  # 2**63 < 10**19
        if not _INT64_MIN <= int(text.iloc[position]) <= _INT64_MAX:
            raise ValueError(
                f"{cells.at(position)}: id {text.iloc[position]!r} is outside the "
                "int64 range [-2**63, 2**63 - 1]; pass id_type='str' to read the "
                "ids of this column as text"
            )


def _convert_ids(
    values: pd.Series, column: str, where: str, kind: str, id_type: str
) -> np.ndarray:
    """Converts an id column to int64 (integer ids) or object (string ids).

    See `read_interactions` (`id_type`) for the rules; every way a column can
    be read other than as the user would expect raises or warns, naming the
    first line concerned.
    """
    cells = _Cells(values, column, where, kind)
    values = cells.values
    if values.isna().any():
        raise ValueError(
            f"{cells.at(_first(values.isna()), column=False)}: missing value in "
            f"id column {column!r}"
        )
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(
            f"{where}: column {column!r} holds booleans; expected integer or string ids"
        )
    if pd.api.types.is_integer_dtype(values):
        if pd.api.types.is_unsigned_integer_dtype(values):
            too_big = values.to_numpy() > np.uint64(_INT64_MAX)
            if too_big.any():
                bad = _first(too_big)
                raise ValueError(
                    f"{cells.at(bad)}: id {_shown(values.iloc[bad])} is outside the "
                    "int64 range [-2**63, 2**63 - 1]; convert the column to "
                    "strings first (e.g. `frame[column].astype(str)`)"
                )
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(values):
        array = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            bad = _first(fractional)
            raise ValueError(
                f"{cells.at(bad)}: expected an integer or string id, got "
                f"{_shown(values.iloc[bad])}"
            )
        too_big = (array < -(2.0**63)) | (array >= 2.0**63)
        if too_big.any():
            bad = _first(too_big)
            raise ValueError(
                f"{cells.at(bad)}: id {_shown(values.iloc[bad])} is outside the "
                "int64 range [-2**63, 2**63 - 1]"
            )
        return array.astype(np.int64)
    text = values.astype(str).str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        raise ValueError(
            f"{cells.at(_first(empty), column=False)}: missing value in id column "
            f"{column!r}"
        )
    if id_type == "str":
        missing = text.str.lower().isin(_MISSING_TOKENS).to_numpy()
        if missing.any():
            bad = _first(missing)
            warnings.warn(
                f"{cells.at(bad)}: {text.iloc[bad]!r} usually marks a missing "
                f"value; it is kept as the string id {text.iloc[bad]!r} "
                "(id_type='str')",
                UserWarning,
                stacklevel=4,
            )
        return text.to_numpy(dtype=object)
    is_int = text.str.fullmatch(_CANONICAL_INT).to_numpy(dtype=bool)
    if is_int.all():
        _check_int64_range(cells, text)
        return text.astype(np.int64).to_numpy()
    # Some ids are not canonical integers: first any missing-value token
    # (only those cells can be one), then the id_type rules.
    others = np.flatnonzero(~is_int)
    missing = text.iloc[others].str.lower().isin(_MISSING_TOKENS).to_numpy()
    if missing.any():
        bad = int(others[_first(missing)])
        raise ValueError(
            f"{cells.at(bad, column=False)}: missing value {text.iloc[bad]!r} in "
            f"id column {column!r}; every interaction needs an id (if "
            f"{text.iloc[bad]!r} is a real id, pass id_type='str')"
        )
    bad = int(others[0])
    if id_type == "int":
        raise ValueError(
            f"{cells.at(bad)}: expected an integer id, got {text.iloc[bad]!r}"
        )
    fraction = text.str.fullmatch(_NON_INTEGER_NUMBER, case=False).to_numpy(bool)
    digits = text.str.fullmatch(_DIGITS).to_numpy(dtype=bool)
    if fraction.any() and (fraction | digits).all():
        bad = _first(fraction)
        raise ValueError(
            f"{cells.at(bad)}: expected an integer id, got the number "
            f"{text.iloc[bad]!r}; the other ids of the column are numbers too. "
            "Pass id_type='str' to read the ids as text"
        )
    if is_int.any():
        example = _first(is_int)
        warnings.warn(
            f"{cells.at(bad)}: {text.iloc[bad]!r} is not an integer id, so all "
            f"{len(text):,} ids of the column are read as strings, although "
            f"{int(is_int.sum()):,} are written as integers (e.g. "
            f"{text.iloc[example]!r} on "
            f"{_row_label(kind, cells.labels[example])}). Pass id_type='str' to "
            "read them as text without this warning, or id_type='int' to make it "
            "an error",
            UserWarning,
            stacklevel=4,
        )
    return text.to_numpy(dtype=object)


def _check_finite(cells: _Cells, array: np.ndarray, shown: pd.Series) -> None:
    """Raises on an infinite (or NaN) timestamp."""
    if array.dtype.kind == "f":
        infinite = ~np.isfinite(array)
        if infinite.any():
            bad = _first(infinite)
            raise ValueError(
                f"{cells.at(bad)}: timestamp {_shown(shown.iloc[bad])} is not "
                "finite; expected a finite number or a date"
            )


def _convert_time(values: pd.Series, column: str, where: str, kind: str) -> np.ndarray:
    """Converts a time column to int64 or float64 (numbers or dates).

    A column is either all numbers (finite) or all dates; a missing value, an
    infinite number or a column mixing numbers and dates raises, naming the
    first line that does not fit.
    """
    cells = _Cells(values, column, where, kind)
    values = cells.values

    def missing_error(position: int) -> ValueError:
        return ValueError(
            f"{cells.at(position, column=False)}: missing value in time column "
            f"{column!r}"
        )

    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{where}: time column {column!r} holds booleans")
    if values.isna().any():
        raise missing_error(_first(values.isna()))
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]").to_numpy().astype(np.int64)
    if pd.api.types.is_numeric_dtype(values):
        array = values.to_numpy()
        _check_finite(cells, array, values)
        return array.astype(
            np.int64 if np.issubdtype(array.dtype, np.integer) else float
        )
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    is_number = numbers.notna().to_numpy()
    if is_number.all():
        array = numbers.to_numpy()
        array = array.astype(
            np.int64 if np.issubdtype(array.dtype, np.integer) else float
        )
        _check_finite(cells, array, text)
        return array
    others = np.flatnonzero(~is_number)
    rest = text.iloc[others]
    missing = ((rest == "") | rest.str.lower().isin(_MISSING_TOKENS)).to_numpy()
    if missing.any():
        raise missing_error(int(others[_first(missing)]))
    if is_number.any():
        # Numbers and other text in one column: name the first cell that does
        # not fit the majority.
        if 2 * int(is_number.sum()) >= len(text):
            bad, example = int(others[0]), _first(is_number)
            expected = "a number like the other timestamps"
            if pd.isna(pd.to_datetime(text.iloc[bad], errors="coerce", utc=True)):
                raise ValueError(
                    f"{cells.at(bad)}: expected a numeric timestamp or a date, "
                    f"got {text.iloc[bad]!r}"
                )
        else:
            bad, example = _first(is_number), int(others[0])
            expected = "a date like the other timestamps"
        raise ValueError(
            f"{cells.at(bad)}: expected {expected} of the column (e.g. "
            f"{text.iloc[example]!r} on "
            f"{_row_label(kind, cells.labels[example])}), got {text.iloc[bad]!r}; "
            "a time column must hold only numbers or only dates"
        )
    try:
        dates = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    except (ValueError, TypeError):  # pragma: no cover - pandas version quirks
        dates = pd.Series(pd.NaT, index=text.index)
    if not dates.isna().any():
        return (
            dates.dt.tz_localize(None)
            .astype("datetime64[ns]")
            .to_numpy()
            .astype(np.int64)
        )
    bad = _first(dates.isna())
    raise ValueError(
        f"{cells.at(bad)}: expected a numeric timestamp or a date, got "
        f"{text.iloc[bad]!r}"
    )


def _read_table(
    path: Path, sep: str | None, file_format: str | None, encoding: str = "utf-8"
) -> tuple[pd.DataFrame, str]:
    """Reads a CSV/TSV/Parquet file; returns the frame and its row kind."""
    suffix = path.suffix.lower()
    fmt = (file_format or "").lower() or (
        "parquet"
        if suffix in _PARQUET_SUFFIXES
        else "csv"
        if suffix in _TEXT_FORMATS or sep
        else None
    )
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; "
            "expected .csv, .tsv or .parquet, or pass `sep=` (text) or "
            "`file_format='parquet'`"
        )
    if fmt == "parquet":
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: file is empty; expected a Parquet file")
        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several unrelated types
            raise ValueError(f"{path}: cannot read as Parquet: {e}") from None
        return frame.reset_index(drop=True), "row"
    if fmt not in ("csv", "tsv", "text"):
        raise ValueError(
            f"`file_format` must be 'csv', 'tsv' or 'parquet'. Received: "
            f"file_format={file_format!r}"
        )
    if sep is None:
        sep = "\t" if fmt == "tsv" else _TEXT_FORMATS.get(suffix, ",")
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            na_filter=False,
            skip_blank_lines=False,
            engine="c" if len(sep) == 1 else "python",
            encoding=encoding,
        )
    except UnicodeDecodeError:
        hint = (
            "; pass `encoding=` with the file's encoding (e.g. encoding='latin-1')"
            if codecs.lookup(encoding).name == "utf-8"
            else "; pass `encoding=` with the file's encoding"
        )
        raise _decoding_error(path, encoding, hint) from None
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: file is empty; expected a header line naming the columns "
            "followed by one interaction per line"
        ) from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: malformed line: {e}".rstrip()) from None
    blank = (frame == "").all(axis=1).to_numpy()
    return frame[~blank], "line"


def read_interactions(
    source: PathLike | pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    *,
    sep: str | None = None,
    file_format: str | None = None,
    id_type: str = "auto",
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Reads an interaction log into a `(user, item, time)` DataFrame.

    Args:
        source: a path to a CSV, TSV (`.tsv`, `.tab`) or Parquet
            (`.parquet`, `.pq`) file, or a `pandas.DataFrame`. Text files need
            a header line with the column names.
        user_col: name of the user id column.
        item_col: name of the item id column.
        time_col: name of the timestamp column (numbers or dates). `None`
            means the log is already in time order: the row order is used.
        sep: field separator of a text file; by default `,` for `.csv` and a
            tab for `.tsv`. Giving it lets any suffix be read as text.
        file_format: `"csv"`, `"tsv"` or `"parquet"` to override the suffix.
        id_type: how the ids of a text column are read:
            - `"auto"`: int64 when every id of the column is a canonical
              integer (`7`, `-3`; not `007`, `+7` or `7.0`), strings
              otherwise. A column of numbers in which some are not integers
              (`6.5`, `7.0`, `1e3`, `inf`) is an error, not strings; a column
              that mixes integers with other text (`7`, `B00X`, `007`) is read
              as strings with a `UserWarning` naming the first non-integer
              line.
            - `"int"`: every id must be a canonical integer, else an error.
            - `"str"`: every id is kept as text, without a warning.
            In every mode a missing id (an empty cell, or `NaN`, `NA`,
            `null`, `None`, ... outside `id_type="str"`) is an error naming
            its line, and an integer id outside int64 (e.g. `10**20`) is an
            error that suggests `id_type="str"`. Numeric columns of a
            DataFrame or Parquet file are kept as integers (a float column
            must hold whole, finite numbers).
        encoding: text encoding of a CSV/TSV file (`"utf-8"` by default; e.g.
            `"latin-1"` for older exports).

    Returns:
        A DataFrame with columns `user`, `item` (int64 or object) and `time`
        (int64 or float64; dates become nanoseconds since the epoch), in the
        order of the input rows. A time column holds only numbers or only
        dates, all finite.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on an empty file, a malformed line, a byte that is not
            valid in `encoding`, a missing column, a missing value, a
            non-integer number or an out-of-range integer as id, a non-integer
            id with `id_type="int"`, or a timestamp that is unparsable,
            infinite or a date among numbers (or a number among dates); the
            message names file, line and column.

    Warns:
        UserWarning: with `id_type="auto"`, when a column that mixes integers
            and other text is read as strings; with `id_type="str"`, when an
            id reads like a missing value (`NA`, `NaN`, ...).

    Example:
    >>> import pandas as pd
    >>> log = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"],
    ...                     "timestamp": [10, 20]})
    >>> read_interactions(log)["item"].tolist()
    ['a', 'b']
    """
    id_type = check_choice("id_type", id_type, ("auto", "int", "str"))
    if not isinstance(encoding, str):
        raise ValueError(
            f"`encoding` must be the name of a text encoding such as 'utf-8'. "
            f"Received: encoding={encoding!r}"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"`encoding` must be the name of a text encoding such as 'utf-8' or "
            f"'latin-1'. Received: encoding={encoding!r}"
        ) from None
    if isinstance(source, pd.DataFrame):
        frame, kind, where = source, "row", "DataFrame"
    else:
        path = _existing_file(source, "interaction log")
        frame, kind = _read_table(path, sep, file_format, encoding)
        where = str(path)
    columns = {"user_col": user_col, "item_col": item_col}
    if time_col is not None:
        columns["time_col"] = time_col
    for argument, column in columns.items():
        if column not in frame.columns:
            raise ValueError(
                f"{where}: column {column!r} (argument `{argument}`) not found; "
                f"available columns: {[str(c) for c in frame.columns]}"
            )
    if len(frame) == 0:
        raise ValueError(f"{where}: no interactions (the log has no data rows)")
    users = _convert_ids(frame[user_col], user_col, where, kind, id_type)
    items = _convert_ids(frame[item_col], item_col, where, kind, id_type)
    if time_col is None:
        times = np.arange(len(frame), dtype=np.int64)
    else:
        times = _convert_time(frame[time_col], time_col, where, kind)
    return pd.DataFrame({"user": users, "item": items, "time": times})


# ---------------------------------------------------------------------------
# MovieLens
# ---------------------------------------------------------------------------


def _diagnose_delimited(
    path: Path, sep: str, fields: list[str], float_fields: tuple[str, ...], header: bool
) -> None:
    """Scans a delimited file line by line and raises on the first bad line."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if header and line_number == 1:
                continue
            if not line.strip():
                continue
            values = list(next(csv.reader([line]))) if sep == "," else line.split(sep)
            if len(values) != len(fields):
                raise ValueError(
                    f"{path}, line {line_number}: malformed line: expected "
                    f"{len(fields)} fields '{sep.join(fields)}', got "
                    f"{len(values)}: {line!r}"
                )
            for name, value in zip(fields, values, strict=True):
                value = value.strip()
                if name in float_fields:
                    try:
                        float(value)
                    except ValueError:
                        raise ValueError(
                            f"{path}, line {line_number}, column {name!r}: "
                            f"expected a number, got {value!r}"
                        ) from None
                elif not re.fullmatch(_CANONICAL_INT, value):
                    raise ValueError(
                        f"{path}, line {line_number}, column {name!r}: expected "
                        f"an integer, got {value!r}"
                    )


def read_movielens_dat(path: PathLike) -> pd.DataFrame:
    """Reads MovieLens-1M `ratings.dat` (`user::item::rating::timestamp`).

    Args:
        path: path of `ratings.dat`.

    Returns:
        A DataFrame with int64 columns `user`, `item`, `rating`, `time` in file
        order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on an empty file, a line without exactly four fields or a
            non-integer value (the message names line and column).

    Example:
    >>> ratings = read_movielens_dat("ml-1m/ratings.dat")  # doctest: +SKIP
    """
    path = _existing_file(path, "MovieLens ratings file")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(
            f"{path}: file is empty; expected lines 'user::item::rating::timestamp'"
        )
    fields = ["user", "item", "rating", "time"]
    try:
        frame = pd.read_csv(
            io.BytesIO(data.replace(b"::", b"\t")),
            sep="\t",
            header=None,
            names=fields,
            dtype=np.int64,
            engine="c",
        )
        if frame.isna().any().any():
            raise ValueError("missing values")
    except (ValueError, pd.errors.ParserError) as e:
        failure = str(e)
    else:
        return frame
    # Slow path, only on failure: find the first bad line for the message.
    _diagnose_delimited(path, "::", fields, (), header=False)
    raise ValueError(
        f"{path}: cannot parse as 'user::item::rating::timestamp': {failure}"
    )


def read_movielens_csv(path: PathLike) -> pd.DataFrame:
    """Reads MovieLens `ratings.csv` (ML-20M/25M: `userId,movieId,rating,timestamp`).

    Args:
        path: path of `ratings.csv` (with its header line).

    Returns:
        A DataFrame with columns `user`, `item`, `time` (int64) and `rating`
        (float64) in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on an empty file, a missing column, a malformed line or a
            non-integer id (the message names line and column).

    Example:
    >>> ratings = read_movielens_csv("ml-20m/ratings.csv")  # doctest: +SKIP
    """
    path = _existing_file(path, "MovieLens ratings file")
    expected = ["userId", "movieId", "rating", "timestamp"]
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip()
    if not header:
        raise ValueError(
            f"{path}: file is empty; expected the header {','.join(expected)}"
        )
    names = [c.strip() for c in header.split(",")]
    for column in expected:
        if column not in names:
            raise ValueError(
                f"{path}, line 1: column {column!r} not found in the header; "
                f"expected {','.join(expected)}, got {header!r}"
            )
    try:
        frame = pd.read_csv(
            path,
            dtype={
                "userId": np.int64,
                "movieId": np.int64,
                "timestamp": np.int64,
                "rating": np.float64,
            },
            engine="c",
        )
        if frame[expected].isna().any().any():
            raise ValueError("missing values")
    except (ValueError, pd.errors.ParserError) as e:
        failure = str(e)
    else:
        failure = None
    if failure is not None:
        # Slow path, only on failure: find the first bad line for the message.
        _diagnose_delimited(path, ",", names, ("rating",), header=True)
        raise ValueError(f"{path}: cannot parse as {','.join(expected)}: {failure}")
    if len(frame) == 0:
        raise ValueError(f"{path}: no ratings (the file has only a header)")
    return pd.DataFrame(
        {
            "user": frame["userId"].to_numpy(),
            "item": frame["movieId"].to_numpy(),
            "rating": frame["rating"].to_numpy(),
            "time": frame["timestamp"].to_numpy(),
        }
    )


def read_movielens_tfds(
    name: str = "movielens/20m-ratings",
    data_dir: PathLike | None = None,
    download: bool = False,
) -> pd.DataFrame:
    """Reads MovieLens ratings through TensorFlow Datasets.

    Args:
        name: the TFDS name, e.g. `"movielens/20m-ratings"` or
            `"movielens/1m-ratings"`.
        data_dir: the TFDS data folder (TFDS's default when `None`).
        download: let TFDS download and prepare the data if it is missing.

    Returns:
        A DataFrame with columns `user`, `item`, `time` (int64) and `rating`
        (float64). TFDS stores ratings in its own order, so ties in time are
        broken by that order, not by the original file's.

    Raises:
        FileNotFoundError: if the dataset is not prepared in `data_dir` and
            `download` is False (or the download fails); the message says how
            to provide it.

    Example:
    >>> ratings = read_movielens_tfds(download=True)  # doctest: +SKIP
    """
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(name, split="train", data_dir=data_dir, download=download)
    except Exception as e:  # TFDS raises AssertionError, DatasetNotFoundError...
        where = data_dir if data_dir is not None else "TFDS's default data_dir"
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not available in {where} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Prepare it once with "
            f"`tfds.load({name!r}, download=True)` on a machine with internet "
            "access, or download ratings.csv from "
            "https://grouplens.org/datasets/movielens/20m/ and pass its folder "
            "as `data_dir`."
        ) from None
    columns: dict[str, list[np.ndarray]] = {
        "user": [],
        "item": [],
        "time": [],
        "rating": [],
    }
    for batch in tfds.as_numpy(dataset.batch(1 << 18)):
        columns["user"].append(batch["user_id"].astype(np.int64))
        columns["item"].append(batch["movie_id"].astype(np.int64))
        columns["time"].append(batch["timestamp"].astype(np.int64))
        columns["rating"].append(batch["user_rating"].astype(np.float64))
    return pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
