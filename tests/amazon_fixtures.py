"""Tiny invented Amazon-format files under the published names.

Written into a temporary folder on first use (the TFDS test cases need the
folder as a class attribute, at import); nothing from the real datasets is
stored in the project.
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

SEQUENCES = "1 1 2 3 4 5\n2 2 3 1 4\n3 5 4 3 2 1 6\n"
ATTRIBUTES = '{"1": [1, 2], "2": [1], "3": [3], "4": [2, 3], "5": [4], "6": [4, 1]}\n'
NAMES = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games")


@functools.cache
def fixture_dir() -> Path:
    """A folder with `manual/` (published names) and `download/` (the files a
    mocked download returns)."""
    root = Path(tempfile.mkdtemp(prefix="keras_fame_amazon_fixtures_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "manual").mkdir()
    for name in NAMES:
        (root / "manual" / f"{name}.txt").write_text(SEQUENCES)
        (root / "manual" / f"{name}_item2attributes.json").write_text(ATTRIBUTES)
    (root / "download").mkdir()
    (root / "download" / "sequences.txt").write_text("10 1 2 3\n11 3 2 1\n")
    (root / "download" / "attributes.json").write_text(
        '{"1": [1], "2": [2], "3": [1, 2]}\n'
    )
    return root
