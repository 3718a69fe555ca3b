"""Provenance of committed records: source commit and machine."""

import os
import shutil
import subprocess

import keras
import pytest

from benchmarks.provenance import machine_description, source_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root, *args):
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    for folder in ("keras_fame", "benchmarks/results", "research/results", "examples"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "keras_fame" / "model.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "toys.json").write_text("{}\n")
    (tmp_path / "research" / "results" / "toys.json").write_text("{}\n")
    (tmp_path / "research" / "REPORT.md").write_text("report\n")
    (tmp_path / "README.md").write_text("readme\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(
        tmp_path,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "-m",
        "first",
    )
    return tmp_path


def test_clean_checkout_gives_the_head_commit(checkout):
    commit = source_commit(checkout / "examples")  # any folder inside
    assert len(commit) == 40 and int(commit, 16) >= 0
    assert commit == _git(checkout, "rev-parse", "HEAD")


def test_edited_code_marks_dirty_but_results_docs_and_new_files_do_not(checkout):
    head = _git(checkout, "rev-parse", "HEAD")
    (checkout / "README.md").write_text("edited\n")
    (checkout / "benchmarks" / "results" / "toys.json").write_text('{"a": 1}\n')
    (checkout / "research" / "results" / "toys.json").write_text('{"a": 1}\n')
    (checkout / "research" / "REPORT.md").write_text("edited\n")
    (checkout / "examples" / "new_script.py").write_text("untracked\n")
    assert source_commit(checkout) == head
    (checkout / "keras_fame" / "model.py").write_text("x = 2\n")
    assert source_commit(checkout) == head + "+dirty"


def test_edited_research_script_marks_dirty(checkout):
    script = checkout / "research" / "scripts" / "bench.py"
    script.parent.mkdir(parents=True)
    script.write_text("x = 1\n")
    _git(checkout, "add", ".")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit",
         "-q", "-m", "script")  # fmt: skip
    head = _git(checkout, "rev-parse", "HEAD")
    assert source_commit(checkout) == head
    script.write_text("x = 2\n")
    assert source_commit(checkout) == head + "+dirty"


def test_outside_a_checkout_or_without_git_is_unknown(checkout, tmp_path, monkeypatch):
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    # `outside` lies inside the checkout (tmp_path): the ceiling keeps git from
    # looking up into it, or into any checkout above.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert source_commit(outside) == "unknown"
    monkeypatch.setenv("PATH", str(outside))  # no git executable
    assert source_commit(checkout) == "unknown"


@pytest.mark.parametrize(
    "devices, expected",
    [
        (["cpu:0"], "no GPU"),
        (["gpu:0", "cpu:0"], "1 GPU"),
        (["gpu:0", "gpu:1"], "2 GPUs"),
        (["tpu:0", "tpu:1", "tpu:2", "tpu:3"], "4 TPUs"),
    ],
)
def test_machine_description_names_accelerators(monkeypatch, devices, expected):
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: devices)
    line = machine_description()
    assert line.endswith(f", {os.cpu_count()} CPU cores, {expected}")
