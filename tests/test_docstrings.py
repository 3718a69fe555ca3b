"""The `>>>` examples of every keras_fame docstring run and stay true."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_fame

# Modules whose import needs what a test run lacks (none today; e.g. a TFDS
# builder that would reach the network) go here with the reason.
SKIP = {}


def _modules():
    names = [keras_fame.__name__]
    for info in pkgutil.walk_packages(keras_fame.__path__, keras_fame.__name__ + "."):
        names.append(info.name)
    return sorted(name for name in names if name not in SKIP)


def _examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name, module=module) if t.examples]
    return module, tests


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module, tests = _examples(name)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    for test in tests:
        test.globs.update({"np": np, "keras": keras, "keras_fame": keras_fame})
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_every_example_is_found():
    # Each `>>>` line of the package's sources is one example that runs.
    from pathlib import Path

    root = Path(keras_fame.__file__).parent
    prompts = sum(
        line.lstrip().startswith(">>>")
        for path in root.rglob("*.py")
        for line in path.read_text().splitlines()
    )
    found = sum(len(t.examples) for n in _modules() for t in _examples(n)[1])
    assert prompts > 50
    assert found == prompts
