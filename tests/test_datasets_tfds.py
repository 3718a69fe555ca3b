"""TFDS: the `amazon_sequences` builder (offline, dummy data) and MovieLens via TFDS."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_fame.datasets import BASE_URL, read_movielens_tfds
from keras_fame.datasets.amazon_sequences import AmazonSequences, from_tfds
from tests.amazon_fixtures import fixture_dir

FIXTURES = fixture_dir()
# tfds.testing (the builder test cases below, and only they) needs dill,
# which tensorflow-datasets does not install.
try:
    import dill  # noqa: F401

    HAVE_DILL = True
except ImportError:
    HAVE_DILL = False

if not HAVE_DILL:

    def test_builder_cases_need_dill():
        pytest.skip("tfds.testing needs dill (pip install dill): builder cases skipped")


class AmazonSequencesManualTest(
    tfds.testing.DatasetBuilderTestCase if HAVE_DILL else object
):
    """All configs, built from the manual folder (published file names)."""

    DATASET_CLASS = AmazonSequences
    EXAMPLE_DIR = str(FIXTURES / "manual")
    SPLITS = {"train": 3}
    SKIP_CHECKSUMS = True  # nothing is downloaded in this case


class AmazonSequencesDownloadTest(
    tfds.testing.DatasetBuilderTestCase if HAVE_DILL else object
):
    """The download path: the manual folder lacks the files, so the builder
    calls `dl_manager.download` with URLs that must be in `checksums.tsv`."""

    DATASET_CLASS = AmazonSequences
    EXAMPLE_DIR = str(FIXTURES / "download")
    BUILDER_CONFIG_NAMES_TO_TEST = ["beauty"]
    DL_DOWNLOAD_RESULT = {"sequences": "sequences.txt", "attributes": "attributes.json"}
    SPLITS = {"train": 2}

    requested: set = set()

    def _add_url(self, url_or_urls):
        type(self).requested.add(url_or_urls)
        super()._add_url(url_or_urls)

    def test_download_and_prepare_as_dataset(self):
        super().test_download_and_prepare_as_dataset()
        self.assertEqual(  # the download path really ran
            type(self).requested,
            {BASE_URL + "Beauty.txt", BASE_URL + "Beauty_item2attributes.json"},
        )


def test_manual_dir_build_to_sequence_dataset(tmp_path):
    ds = from_tfds(
        "amazon_sequences/toys",
        data_dir=str(tmp_path),
        manual_dir=str(FIXTURES / "manual"),
    )
    assert [s.tolist() for s in ds.sequences] == [
        [1, 2, 3, 4, 5],
        [2, 3, 1, 4],
        [5, 4, 3, 2, 1, 6],
    ]
    assert ds.user_ids.tolist() == [1, 2, 3]
    assert ds.num_items == 6
    assert ds.item_attributes[6] == [4, 1]


def test_checksums_match_named_dataset_registry():
    from keras_fame.datasets import AMAZON_DATASETS

    infos = tfds.core.download.checksums.load_url_infos(
        Path(__file__).parents[1] / "keras_fame/datasets/amazon_sequences/checksums.tsv"
    )
    for files in AMAZON_DATASETS.values():
        assert infos[BASE_URL + files.sequences].checksum == files.sequences_sha256
        assert infos[BASE_URL + files.attributes].checksum == files.attributes_sha256


def test_movielens_tfds_not_available_error(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"movielens/20m-ratings.*not available"
    ):
        read_movielens_tfds(
            "movielens/20m-ratings", data_dir=str(tmp_path), download=False
        )


def test_load_ml20m_without_data_says_how_to_provide(tmp_path):
    from keras_fame.datasets import DatasetNotAvailableError, load

    with pytest.raises(DatasetNotAvailableError, match=r"ratings\.csv.*grouplens"):
        load("ml-20m", data_dir=tmp_path, download=False)


def test_prepared_metadata_holds_item_attributes(tmp_path):
    builder = AmazonSequences(config="beauty", data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(FIXTURES / "manual")
        )
    )
    reloaded = AmazonSequences(config="beauty", data_dir=str(tmp_path))
    assert reloaded.info.metadata["item_attributes"]["4"] == [2, 3]
    rows = list(tfds.as_numpy(reloaded.as_dataset(split="train")))
    assert all(r["item_ids"].dtype == np.int32 for r in rows)
    sequences = sorted(r["item_ids"].tolist() for r in rows)
    assert sequences == [[1, 2, 3, 4, 5], [2, 3, 1, 4], [5, 4, 3, 2, 1, 6]]
