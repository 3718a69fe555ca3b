"""Named datasets: the published Amazon files, local folders, the offline errors."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from keras_fame import datasets
from keras_fame.datasets import DATA_DIR_ENV, DatasetNotAvailableError, load
from tests.amazon_fixtures import fixture_dir

# Where the published files are looked for, in order: $KERAS_FAME_TEST_DATA,
# ../shared/datasets/amazon beside the checkout, the workplace's shared folder.
TEST_DATA_ENV = "KERAS_FAME_TEST_DATA"
CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon",
    Path("/work/shared/datasets/amazon"),
]
# CI sets this (it has the shared folder): there a missing folder is a failure.
REQUIRE_DATA_ENV = "KERAS_FAME_REQUIRE_DATA"


def _amazon_dir() -> tuple[Path | None, list[Path]]:
    given = os.environ.get(TEST_DATA_ENV)
    candidates = [Path(given)] if given else CANDIDATES
    found = next((c for c in candidates if (c / "Beauty.txt").is_file()), None)
    return found, candidates


AMAZON_DIR = _amazon_dir()[0] or CANDIDATES[0]


@pytest.fixture
def amazon_dir():
    """The published files' folder; skips (or, with KERAS_FAME_REQUIRE_DATA=1,
    fails) saying where they were looked for."""
    found, candidates = _amazon_dir()
    if found is None:
        missing = (
            "the published Amazon files are in none of "
            + ", ".join(str(c) for c in candidates)
            + f" (set {TEST_DATA_ENV} to their folder)"
        )
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"{REQUIRE_DATA_ENV}=1, but {missing}")
        pytest.skip(missing)
    return found


def needs_amazon(test):
    """Marks a test on the real data `large` (`pytest -m large` runs them)."""
    return pytest.mark.large(pytest.mark.usefixtures("amazon_dir")(test))


FIXTURES = fixture_dir() / "manual"

TABLE_1 = {  # the spec's dataset table (users, items, actions)
    "beauty": (22_363, 12_101, 198_502),
    "sports": (35_598, 18_357, 296_337),
    "toys": (19_412, 11_924, 167_597),
}


@pytest.fixture(autouse=True)
def no_env_dir(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@needs_amazon
@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_published_files_reproduce_table_1(name):
    ds = load(name, data_dir=AMAZON_DIR)
    stats = ds.describe()
    assert (stats["users"], stats["items"], stats["actions"]) == TABLE_1[name]
    assert stats["avg_length"] == pytest.approx(TABLE_1[name][2] / TABLE_1[name][0])
    assert stats["density"] == pytest.approx(
        TABLE_1[name][2] / (TABLE_1[name][0] * TABLE_1[name][1])
    )
    # ids kept as published: identity vocabulary, attribute keys stay valid
    assert ds.vocabulary.is_identity and ds.num_items == ds.max_item_id
    assert set(ds.item_attributes) == set(range(1, ds.num_items + 1))
    assert ds.report.dropped_interactions == 0
    assert ds.user_ids.tolist() == list(range(1, ds.num_users + 1))
    # the first line of every file is `1 1 2 3 ...`-like: raw ids untouched
    first = (
        (AMAZON_DIR / datasets.AMAZON_DATASETS[name].sequences)
        .open()
        .readline()
        .split()
    )
    assert ds.sequences[0].tolist() == [int(t) for t in first[1:]]


@needs_amazon
def test_published_beauty_pipelines_smoke():
    ds = load("beauty", data_dir=AMAZON_DIR)
    x, y = ds.train_arrays(max_len=50)
    assert len(x) == ds.num_users  # every user has >= 5 items
    assert not y[x == 0].any() and y.max() <= ds.num_items
    features, target = ds.eval_arrays("test")
    assert len(target) == ds.num_users and target.min() >= 1


@needs_amazon
@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_published_pipelines_hold_every_target_once(name):
    # Counted from the sequences: the training targets are each user's
    # items after the first but the last two (validation, test); with one
    # row per user (prefixes=False) the most recent max_len of them, with
    # one row per target (prefixes=True, the default) all of them.
    # Validation and test hold those two.
    ds = load(name, data_dir=AMAZON_DIR)
    max_len = 50
    for prefixes, keep in ((False, max_len), (True, None)):
        seen = []
        rows = ds.train_dataset(
            batch_size=4096, max_len=max_len, shuffle=False, prefixes=prefixes
        )
        for _, y in rows:
            y = y.numpy()
            seen.append(y[y != 0])
        expected = np.concatenate(
            [s[1:-2][-keep:] if keep else s[1:-2] for s in ds.sequences]
        )
        np.testing.assert_array_equal(
            np.sort(np.concatenate(seen)), np.sort(expected), err_msg=str(prefixes)
        )
    for split, column in (("valid", -2), ("test", -1)):
        features, targets = ds.eval_arrays(split, max_len=max_len)
        np.testing.assert_array_equal(targets, [s[column] for s in ds.sequences])
        last = [s[column - 1] for s in ds.sequences]
        np.testing.assert_array_equal(features["item_ids"][:, -1], last)


@needs_amazon
def test_environment_variable_folder(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(AMAZON_DIR))
    assert load("toys").describe()["users"] == TABLE_1["toys"][0]


def test_local_folder_with_published_names_warns_on_checksum(tmp_path):
    shutil.copy(FIXTURES / "Beauty.txt", tmp_path)
    shutil.copy(FIXTURES / "Beauty_item2attributes.json", tmp_path)
    with pytest.warns(
        UserWarning, match=r"differs from the published file \(sha256 mismatch\)"
    ):
        ds = load("beauty", data_dir=tmp_path)
    assert ds.num_users == 3 and ds.item_attributes[1] == [1, 2]


def test_local_folder_without_attributes_warns(tmp_path):
    shutil.copy(FIXTURES / "Toys_and_Games.txt", tmp_path)
    with pytest.warns(UserWarning) as record:
        ds = load("toys", data_dir=tmp_path)
    assert any("without item attributes" in str(w.message) for w in record)
    assert ds.item_attributes is None


def test_local_folder_missing_file_names_expected_files(tmp_path):
    with pytest.raises(
        DatasetNotAvailableError,
        match=r"Sports_and_Outdoors\.txt not found .*data_dir=",
    ):
        load("sports", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"is not a folder"):
        load("sports", data_dir=tmp_path / "nope")


def test_offline_without_local_copy_explains_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.named, "BASE_URL", "http://127.0.0.1:9/")  # refused
    with pytest.raises(
        DatasetNotAvailableError,
        match=r"could not download http://127\.0\.0\.1:9/Beauty\.txt .*Offline\? "
        r"Download .*Beauty\.txt.*`data_dir=`.*KERAS_FAME_DATA_DIR",
    ):
        load("beauty", cache_dir=tmp_path)
    with pytest.raises(DatasetNotAvailableError, match=r"download=False.*data_dir="):
        load("beauty", cache_dir=tmp_path, download=False)


def test_env_folder_without_the_file_falls_back_to_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "mine"))
    with pytest.raises(
        DatasetNotAvailableError,
        match=r"Toys_and_Games\.txt is not in \$KERAS_FAME_DATA_DIR=.*download=False",
    ):
        load("toys", cache_dir=tmp_path, download=False)


def test_download_verifies_checksum(tmp_path, monkeypatch):
    # a file:// origin exercises keras.utils.get_file offline; the tiny fixture
    # does not have the published checksum, so the download must be refused
    monkeypatch.setattr(datasets.named, "BASE_URL", FIXTURES.as_uri() + "/")
    with pytest.raises(DatasetNotAvailableError, match=r"failed its sha256 check"):
        load("beauty", cache_dir=tmp_path)
    assert not (tmp_path / "datasets" / "keras_fame" / "Beauty.txt").exists()


@needs_amazon
def test_download_into_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.named, "BASE_URL", AMAZON_DIR.as_uri() + "/")
    ds = load("toys", cache_dir=tmp_path)
    assert ds.describe()["users"] == TABLE_1["toys"][0]
    cached = tmp_path / "datasets" / "keras_fame"
    assert sorted(p.name for p in cached.iterdir()) == [
        "Toys_and_Games.txt",
        "Toys_and_Games_item2attributes.json",
    ]
    # now offline: the verified cache is used without any download
    monkeypatch.setattr(datasets.named, "BASE_URL", "http://127.0.0.1:9/")
    assert (
        load("toys", cache_dir=tmp_path, download=False).num_items == TABLE_1["toys"][1]
    )


def test_unknown_name():
    with pytest.raises(
        ValueError, match=r"Unknown dataset 'beuty'. Expected one of \['beauty'"
    ):
        load("beuty")


def test_synthetic_by_name():
    ds = load("synthetic")
    stats = ds.describe()
    assert (stats["users"], stats["items"]) == (2000, 500)
    assert 10 <= stats["min_length"] and stats["max_length"] <= 30


def test_movielens_1m_from_local_folder(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for user in range(1, 9):  # 8 users x 7 items, each user in its own order
        for k, item in enumerate(rng.permutation(7) + 100):
            lines.append(f"{user}::{item}::4::{1000 + k}")
    lines.append("9::100::5::1")  # user 9 has one rating: dropped by the 5-core
    (tmp_path / "ratings.dat").write_text("\n".join(lines) + "\n")
    ds = load("ml-1m", data_dir=tmp_path)
    assert (ds.num_users, ds.num_items, ds.num_actions) == (8, 7, 56)
    assert ds.report.input_interactions == 57 and ds.report.dropped_interactions == 1
    assert 9 not in ds.vocabulary.user_ids.tolist()
    first_user = [int(line.split("::")[1]) for line in lines[:7]]
    assert ds.vocabulary.decode(ds.sequences[0]).tolist() == first_user


def test_movielens_20m_from_local_ratings_csv(tmp_path):
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, 7):
        rows += [f"{user},{item},3.5,{10 * item + user}" for item in range(1, 7)]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    ds = load("ml-20m", data_dir=tmp_path)
    assert (ds.num_users, ds.num_items, ds.num_actions) == (6, 6, 36)
    assert ds.sequences[0].tolist() == [1, 2, 3, 4, 5, 6]


def test_movielens_1m_missing(tmp_path):
    with pytest.raises(
        DatasetNotAvailableError, match=r"has no ratings\.dat.*grouplens"
    ):
        load("ml-1m", data_dir=tmp_path)
