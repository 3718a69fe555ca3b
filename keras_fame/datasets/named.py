"""Named datasets: `load("beauty" | "sports" | "toys" | "ml-20m" | "ml-1m" | "synthetic")`."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

from keras_fame.datasets.readers import (
    read_movielens_csv,
    read_movielens_dat,
    read_movielens_tfds,
)
from keras_fame.datasets.sequence_dataset import (
    SequenceDataset,
    from_interactions,
    from_sequence_file,
)

DATA_DIR_ENV = "KERAS_FAME_DATA_DIR"
"""Environment variable naming a local folder with the dataset files."""

BASE_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
"""Public source of the Amazon 5-core files (identical copies in salesforce/ICLRec)."""

CACHE_SUBDIR = os.path.join("datasets", "keras_fame")
"""Sub-folder of the Keras cache root (`~/.keras/datasets/keras_fame`)."""


@dataclasses.dataclass(frozen=True)
class AmazonFiles:
    """The published files of one Amazon dataset and their sha256 checksums."""

    sequences: str
    sequences_sha256: str
    attributes: str
    attributes_sha256: str


AMAZON_DATASETS = {
    "beauty": AmazonFiles(
        "Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "Beauty_item2attributes.json",
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
    ),
    "sports": AmazonFiles(
        "Sports_and_Outdoors.txt",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        "Sports_and_Outdoors_item2attributes.json",
        "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
    ),
    "toys": AmazonFiles(
        "Toys_and_Games.txt",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        "Toys_and_Games_item2attributes.json",
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
    ),
}

_ALIASES = {
    "amazon-beauty": "beauty",
    "sports_and_outdoors": "sports",
    "amazon-sports": "sports",
    "toys_and_games": "toys",
    "amazon-toys": "toys",
    "ml20m": "ml-20m",
    "movielens-20m": "ml-20m",
    "ml1m": "ml-1m",
    "movielens-1m": "ml-1m",
}


class DatasetNotAvailableError(FileNotFoundError):
    """A named dataset is neither on disk nor downloadable right now."""


def available_datasets() -> list[str]:
    """Names accepted by `load`.

    Example:
    >>> available_datasets()
    ['beauty', 'ml-1m', 'ml-20m', 'sports', 'synthetic', 'toys']
    """
    return sorted([*AMAZON_DATASETS, "ml-1m", "ml-20m", "synthetic"])


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    **kwargs,
) -> SequenceDataset:
    """Loads a named dataset as a `SequenceDataset`.

    - `"beauty"`, `"sports"`, `"toys"`: the published 5-core files of
      S3-Rec/ICLRec with their item attributes; item ids are kept as
      published. Looked up, in order, in `data_dir`, in the folder named by
      the `KERAS_FAME_DATA_DIR` environment variable, then in the Keras cache
      (`~/.keras/datasets/keras_fame`), where they are downloaded (sha256
      verified) if missing and `download` is True.
    - `"ml-20m"`: MovieLens-20M, 5-core (as in the paper), from
      `ratings.csv` in `data_dir` / `$KERAS_FAME_DATA_DIR` (or its `ml-20m/`
      sub-folder), else from TFDS `movielens/20m-ratings`.
    - `"ml-1m"`: MovieLens-1M `ratings.dat` from a local folder, 5-core.
    - `"synthetic"`: the built-in planted-facet dataset (no download);
      `kwargs` go to `make_synthetic`.

    Args:
        name: dataset name (see `available_datasets()`), case-insensitive.
        data_dir: a local folder that holds the files under their published
            names (e.g. `Beauty.txt`, `Beauty_item2attributes.json`).
        download: allow downloading when no local copy exists.
        cache_dir: Keras cache root (default `~/.keras`); for Amazon data.
        **kwargs: for `"synthetic"`: arguments of `make_synthetic`; for the
            MovieLens datasets: arguments of `from_interactions` (e.g.
            `min_count`).

    Returns:
        A `SequenceDataset`.

    Raises:
        ValueError: for an unknown name.
        DatasetNotAvailableError: (a `FileNotFoundError`) when the files are
            not found and cannot be downloaded; the message says where to put
            them.

    Example:
    >>> ds = load("synthetic")
    >>> sorted(ds.describe())[:3]
    ['actions', 'avg_length', 'density']
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key == "synthetic":
        from keras_fame.datasets.synthetic import make_synthetic

        return make_synthetic(**kwargs)[0]
    if key in AMAZON_DATASETS:
        if kwargs:
            raise TypeError(
                f"unexpected keyword arguments for {key!r}: {sorted(kwargs)}"
            )
        return _load_amazon(key, data_dir, download, cache_dir)
    if key == "ml-20m":
        return _load_movielens_20m(data_dir, download, **kwargs)
    if key == "ml-1m":
        return _load_movielens_1m(data_dir, **kwargs)
    raise ValueError(
        f"Unknown dataset {name!r}. Expected one of {available_datasets()}; for "
        "your own log use `keras_fame.datasets.from_interactions`."
    )


def _local_dir(data_dir) -> tuple[Path | None, str]:
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir"
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser(), f"${DATA_DIR_ENV}"
    return None, ""


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_provide(files: AmazonFiles) -> str:
    return (
        f"Download {BASE_URL}{files.sequences} (and {files.attributes}) on a "
        f"machine with internet access, put them in a folder and pass it as "
        f"`data_dir=` or set the environment variable {DATA_DIR_ENV} to it; or "
        f"copy them into the Keras cache folder ~/.keras/{CACHE_SUBDIR}/."
    )


def _load_amazon(key: str, data_dir, download: bool, cache_dir) -> SequenceDataset:
    files = AMAZON_DATASETS[key]
    folder, source = _local_dir(data_dir)
    searched = ""
    if folder is not None:
        sequences = folder / files.sequences
        if sequences.is_file():
            return _load_amazon_folder(key, files, folder)
        if source == "data_dir":  # an explicit folder must hold the files
            if not folder.is_dir():
                raise DatasetNotAvailableError(
                    f"data_dir={str(folder)!r} is not a folder. Expected a folder "
                    f"holding {files.sequences} and {files.attributes}."
                )
            raise DatasetNotAvailableError(
                f"{sequences} not found (data_dir={str(folder)!r}). The folder "
                f"must hold the published file names: {files.sequences} and "
                f"{files.attributes}. {_how_to_provide(files)}"
            )
        searched = f"{files.sequences} is not in {source}={str(folder)!r}; "
    sequences = _fetch(
        files.sequences, files.sequences_sha256, files, download, cache_dir, searched
    )
    attributes = _fetch(
        files.attributes, files.attributes_sha256, files, download, cache_dir, searched
    )
    return from_sequence_file(sequences, attributes, name=key)


def _load_amazon_folder(key: str, files: AmazonFiles, folder: Path) -> SequenceDataset:
    sequences = folder / files.sequences
    if sha256_of(sequences) != files.sequences_sha256:
        warnings.warn(
            f"{sequences} differs from the published file (sha256 mismatch); "
            "its counts may not match the paper's Table 1.",
            stacklevel=4,
        )
    attributes = folder / files.attributes
    if not attributes.is_file():
        warnings.warn(
            f"{attributes} not found: loading {key!r} without item attributes.",
            stacklevel=4,
        )
        attributes = None
    return from_sequence_file(sequences, attributes, name=key)


def _cache_root(cache_dir) -> Path:
    """The Keras cache root, as `keras.utils.get_file` resolves it."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    if not os.access(root, os.W_OK) and not os.access(root.parent, os.W_OK):
        root = Path("/tmp/.keras")
    return root


def _fetch(
    fname: str,
    sha256: str,
    files: AmazonFiles,
    download: bool,
    cache_dir,
    searched: str,
) -> str:
    """Returns the cached file, downloading (checksum verified) if needed."""
    root = _cache_root(cache_dir)
    cached = root / CACHE_SUBDIR / fname
    if cached.is_file() and sha256_of(cached) == sha256:
        return str(cached)
    if not download:
        raise DatasetNotAvailableError(
            f"{searched}{fname} is not in the Keras cache ({cached}) and "
            f"download=False. {_how_to_provide(files)}"
        )
    import keras

    try:
        return keras.utils.get_file(
            fname=fname,
            origin=BASE_URL + fname,
            file_hash=sha256,
            hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=str(root),
        )
    except ValueError as e:  # keras: the downloaded file fails the checksum
        cached.unlink(missing_ok=True)  # keras leaves the bad file behind
        raise DatasetNotAvailableError(
            f"{searched}the download of {BASE_URL + fname} failed its sha256 check "
            f"({e}). {_how_to_provide(files)}"
        ) from None
    except Exception as e:  # urllib errors are re-raised as bare Exceptions
        raise DatasetNotAvailableError(
            f"{searched}could not download {BASE_URL + fname} ({type(e).__name__}: "
            f"{e}). Offline? {_how_to_provide(files)}"
        ) from None


def _movielens_how_to(version: str, file: str) -> str:
    return (
        f"Download ml-{version}.zip from https://grouplens.org/datasets/movielens/"
        f"{version}/ on a machine with internet access, unzip it and pass the folder "
        f"holding {file} as `data_dir=` (or set {DATA_DIR_ENV})."
    )


def _find(folder: Path | None, names: list[str]) -> Path | None:
    if folder is None:
        return None
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _load_movielens_20m(data_dir, download: bool, **kwargs) -> SequenceDataset:
    folder, source = _local_dir(data_dir)
    path = _find(folder, ["ratings.csv", "ml-20m/ratings.csv"])
    if path is not None:
        ratings = read_movielens_csv(path)
    else:
        try:
            ratings = read_movielens_tfds(
                "movielens/20m-ratings",
                data_dir=None if folder is None else str(folder),
                download=download,
            )
        except FileNotFoundError as e:
            where = f" ({source}={str(folder)!r} has no ratings.csv)" if folder else ""
            raise DatasetNotAvailableError(
                f"ml-20m is not available{where}: {e} "
                f"{_movielens_how_to('20m', 'ratings.csv')}"
            ) from None
    kwargs.setdefault("min_count", 5)
    return from_interactions(
        ratings,
        user_col="user",
        item_col="item",
        time_col="time",
        name="ml-20m",
        **kwargs,
    )


def _load_movielens_1m(data_dir, **kwargs) -> SequenceDataset:
    folder, source = _local_dir(data_dir)
    path = _find(folder, ["ratings.dat", "ml-1m/ratings.dat"])
    if path is None:
        where = f"{source}={str(folder)!r} has no ratings.dat. " if folder else ""
        raise DatasetNotAvailableError(
            f"ml-1m is not available: {where}{_movielens_how_to('1m', 'ratings.dat')}"
        )
    kwargs.setdefault("min_count", 5)
    return from_interactions(
        read_movielens_dat(path),
        user_col="user",
        item_col="item",
        time_col="time",
        name="ml-1m",
        **kwargs,
    )
