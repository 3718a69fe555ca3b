"""`amazon_sequences`: the S3-Rec/ICLRec Amazon 5-core files as a TFDS dataset."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_fame.datasets.named import AMAZON_DATASETS, BASE_URL
from keras_fame.datasets.readers import parse_item_attributes, parse_sequence_lines

_DESCRIPTION = """
Amazon Beauty, Sports_and_Outdoors and Toys_and_Games review data (McAuley et
al., 2015) as prepared by S3-Rec (Zhou et al., CIKM 2020) and reused by ICLRec
and FAME: 5-core, one time-ordered item sequence per user, item ids 1..I.

One example per user: `user_id` and the full `item_ids` sequence. Apply the
leave-one-out split downstream (e.g. with `keras_fame.datasets.from_tfds`).
The item attributes (`*_item2attributes.json`) are in
`info.metadata["item_attributes"]` (keys: item ids as strings).
"""

_CITATION = """
@inproceedings{zhou2020s3rec,
  title={S3-Rec: Self-Supervised Learning for Sequential Recommendation with
         Mutual Information Maximization},
  author={Zhou, Kun and Wang, Hui and Zhao, Wayne Xin and Zhu, Yutao and
          Wang, Sirui and Zhang, Fuzheng and Wang, Zhongyuan and Wen, Ji-Rong},
  booktitle={CIKM},
  year={2020}
}
"""


class AmazonSequences(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for the Amazon 5-core sequence datasets.

    Configs: `beauty`, `sports`, `toys`. The files are downloaded from the
    S3-Rec repository (checksums in `checksums.tsv`) unless they are found
    under their published names in the manual folder
    (`download_config=tfds.download.DownloadConfig(manual_dir=...)` or
    `tfds.load(..., download_and_prepare_kwargs=...)`).

    Example:
    >>> import tensorflow_datasets as tfds  # doctest: +SKIP
    >>> builder = AmazonSequences(config="beauty")  # doctest: +SKIP
    >>> builder.download_and_prepare()  # doctest: +SKIP
    >>> ds = builder.as_dataset(split="train")  # doctest: +SKIP
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Optional. Place the published files (e.g. `Beauty.txt` and
    `Beauty_item2attributes.json`, from
    https://github.com/RUCAIBox/CIKM2020-S3Rec/tree/master/data) in the manual
    folder to build without internet access; otherwise they are downloaded.
    """
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name=key, description=f"Amazon {files.sequences[:-4]} 5-core sequences."
        )
        for key, files in AMAZON_DATASETS.items()
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "user_id": np.int64,
                    "item_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        files = AMAZON_DATASETS[self.builder_config.name]
        names = {"sequences": files.sequences, "attributes": files.attributes}
        paths = self._manual_files(dl_manager, names)
        if paths is None:
            paths = dl_manager.download({k: BASE_URL + v for k, v in names.items()})
        paths = {k: epath.Path(v) for k, v in paths.items()}
        attributes = parse_item_attributes(
            paths["attributes"].read_text(), str(paths["attributes"])
        )
        self.info.metadata["item_attributes"] = {
            str(k): v for k, v in sorted(attributes.items())
        }
        return {"train": self._generate_examples(paths["sequences"])}

    @staticmethod
    def _manual_files(dl_manager, names: dict[str, str]) -> dict | None:
        """The files from the manual folder, or None if it lacks them."""
        try:
            folder = dl_manager.manual_dir
        except Exception:  # no manual folder configured, or it is empty
            return None
        paths = {k: epath.Path(folder) / v for k, v in names.items()}
        if all(p.exists() for p in paths.values()):
            return paths
        return None

    def _generate_examples(self, path: epath.Path):
        users, sequences = parse_sequence_lines(
            path.read_text().splitlines(), str(path)
        )
        for user, items in zip(users.tolist(), sequences, strict=True):
            yield user, {"user_id": user, "item_ids": items.astype(np.int32)}


def from_tfds(
    name: str = "amazon_sequences/beauty",
    data_dir: str | None = None,
    split: str = "train",
    download: bool = True,
    manual_dir: str | None = None,
):
    """Loads an `amazon_sequences` TFDS dataset as a `SequenceDataset`.

    Args:
        name: `"amazon_sequences/<config>"` with config `beauty`, `sports` or
            `toys`.
        data_dir: TFDS data folder (TFDS's default when `None`).
        split: the TFDS split (`"train"` holds every user).
        download: prepare the dataset if it is not prepared yet.
        manual_dir: folder with the published files, used instead of the
            internet when preparing.

    Returns:
        A `SequenceDataset` with the published item ids, users in TFDS order
        sorted by user id, and `item_attributes` from the dataset metadata.

    Example:
    >>> ds = from_tfds("amazon_sequences/toys", manual_dir="data/")  # doctest: +SKIP
    """
    from keras_fame.datasets.sequence_dataset import SequenceDataset

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
    rows.sort(key=lambda r: int(r["user_id"]))
    metadata = builder.info.metadata or {}
    attributes = {
        int(k): list(v) for k, v in metadata.get("item_attributes", {}).items()
    }
    return SequenceDataset(
        [r["item_ids"] for r in rows],
        user_ids=np.asarray([int(r["user_id"]) for r in rows]),
        item_attributes=attributes or None,
        name=builder.builder_config.name,
    )
