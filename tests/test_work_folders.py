"""Work folders: exact resume, folders that know their data, partial and
damaged folders refused with the file named."""

import dataclasses
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_fame import training
from keras_fame.datasets import SequenceDataset
from keras_fame.models import FAME
from keras_fame.training import TrainConfig, train_sasrec, two_stage
from tests.reference import small_recipe_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(
    hidden_dim=16,
    num_heads=2,
    num_experts=2,
    max_len=16,
    dropout=0.3,
    batch_size=32,
    pretrain_epochs=3,
    finetune_epochs=2,
    patience=5,
    backup_every=2,
    eval_batch_size=128,
    prefixes=False,
)


class Kill(BaseException):
    """A simulated kill: nothing of the process survives but its files."""


@pytest.fixture(scope="module")
def data():
    return small_recipe_data()


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    runs = two_stage(data, CONFIG, folder, verbose=0)
    return folder, {name: (model.get_weights(), r) for name, (model, r) in runs.items()}


def _assert_same_run(runs, reference):
    for name, (model, results) in runs.items():
        weights, expected = reference[name]
        for a, b in zip(model.get_weights(), weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        for split in ("valid", "test"):
            for metric, value in expected[split].items():
                assert results[split][metric] == pytest.approx(value, abs=1e-6)
        for key in ("best_epoch", "epochs_run"):
            assert results[key] == expected[key], (name, key)


class _KillAtStep(keras.callbacks.Callback):
    """Kills the run once its stage `model_class` reaches optimizer step
    `step` (the stage's count, restored with its checkpoint)."""

    def __init__(self, model_class, step):
        super().__init__()
        self.model_class, self.step = model_class, step
        self.fired = False

    def on_train_batch_end(self, batch, logs=None):
        if type(self.model).__name__ == self.model_class:
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == (
                self.step
            ):
                self.fired = True
                raise Kill()


def test_killed_at_random_moments_resumes_to_the_uninterrupted_run(
    data, uninterrupted, tmp_path, monkeypatch
):
    # 5 training steps an epoch (150 users, batch 32): SASRec's stage has 15,
    # FAME's 10, with a checkpoint every 2 steps and after every epoch.
    rng = random.Random(0)
    kills = [("SASRec", rng.randint(1, 15)), ("FAME", rng.randint(1, 10))]
    # Kills while a checkpoint is written: half a file and no rename, and
    # (third) after the rename but before the older checkpoint is removed.
    save = training._save_arrays
    writes = {"count": 0, "kill_at": {3: "half", 9: "after"}}

    def killable_save(path, arrays):
        writes["count"] += 1
        how = writes["kill_at"].pop(writes["count"], None)
        if how == "half":
            tmp = training._temporary(path)
            with tmp.open("wb") as f:
                np.savez(f, **arrays)
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            raise Kill()
        save(path, arrays)
        if how == "after":
            raise Kill()

    monkeypatch.setattr(training, "_save_arrays", killable_save)
    attempts = 0
    while True:
        attempts += 1
        callbacks = [_KillAtStep(*kills[0])] if kills else []
        try:
            runs = two_stage(data, CONFIG, tmp_path, verbose=0, callbacks=callbacks)
            break
        except Kill:
            if callbacks and callbacks[0].fired:
                kills.pop(0)
            assert attempts < 10
    assert attempts == 5 and not kills and not writes["kill_at"]
    _assert_same_run(runs, uninterrupted[1])
    for name in ("sasrec", "fame"):
        history = json.loads((tmp_path / name / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(len(history)))
        assert not (tmp_path / name / "checkpoint").exists()


def test_a_kill_before_the_first_checkpoint_or_after_the_model_is_saved(
    data, uninterrupted, tmp_path, monkeypatch
):
    # Killed before any checkpoint: the rerun starts the stage afresh.
    with pytest.raises(Kill):
        two_stage(
            data, CONFIG, tmp_path, verbose=0, callbacks=[_KillAtStep("SASRec", 1)]
        )
    assert not (tmp_path / "sasrec" / "checkpoint").exists()
    # Killed after SASRec's model.keras is written, before its results.json:
    # the last checkpoint (training done) is still there and is finished.
    write_json = training._write_json

    def kill_at_results(path, value):
        if path.name == "results.json":
            raise Kill()
        write_json(path, value)

    monkeypatch.setattr(training, "_write_json", kill_at_results)
    with pytest.raises(Kill):
        two_stage(data, CONFIG, tmp_path, verbose=0)
    assert (tmp_path / "sasrec" / "model.keras").exists()
    assert (tmp_path / "sasrec" / "checkpoint").exists()
    monkeypatch.setattr(training, "_write_json", write_json)
    _assert_same_run(two_stage(data, CONFIG, tmp_path, verbose=0), uninterrupted[1])


_CHILD = """
import sys
sys.path.insert(0, {root!r})
from tests.reference import small_recipe_data
from tests.test_work_folders import CONFIG
from keras_fame.training import two_stage
two_stage(small_recipe_data(), CONFIG, {folder!r}, verbose=0)
print("finished")
"""


@pytest.mark.large
def test_sigkilled_processes_resume_to_the_uninterrupted_run(
    data, uninterrupted, tmp_path
):
    # Real kills (SIGKILL) of a training process at random moments.
    script = _CHILD.format(root=str(ROOT), folder=str(tmp_path / "run"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rng = random.Random(1)
    killed = 0
    states = str(tmp_path / "run" / "*" / "checkpoint" / "state-*.npz")
    for _ in range(4):
        before = set(glob.glob(states))
        child = subprocess.Popen([sys.executable, "-c", script], env=env)
        # Once the child has written a checkpoint of its own (it is training),
        # at a random moment soon after: before, during or after the next write.
        deadline = time.monotonic() + 300
        while child.poll() is None and time.monotonic() < deadline:
            if set(glob.glob(states)) - before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.6))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait()
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert killed >= 2
    for name in ("sasrec", "fame"):
        results = json.loads((tmp_path / "run" / name / "results.json").read_text())
        expected = uninterrupted[1][name][1]
        for split in ("valid", "test"):
            for metric, value in expected[split].items():
                assert results[split][metric] == pytest.approx(value, abs=1e-6)


def _other_data(data):
    # The same users, items and actions; one user's two last items swapped.
    sequences = [s.copy() for s in data.sequences]
    sequences[0][-2:] = sequences[0][-2:][::-1].copy()
    return SequenceDataset(sequences, data.num_items, name="other")


def test_a_finished_folder_refuses_other_data(data, uninterrupted):
    folder = uninterrupted[0]
    other = _other_data(data)
    assert other.fingerprint()["actions"] == data.fingerprint()["actions"]
    with pytest.raises(ValueError, match=r"belongs to other data.*data\.json") as error:
        two_stage(other, CONFIG, folder, verbose=0)
    message = str(error.value)
    assert data.fingerprint()["sequences"][:12] in message
    assert other.fingerprint()["sequences"][:12] in message
    # A stage folder on its own refuses it too (its stage.json records it).
    with pytest.raises(ValueError, match=r"belongs to other data.*stage\.json"):
        train_sasrec(other, CONFIG, folder, verbose=0)


def test_an_unfinished_stage_refuses_other_data(data, tmp_path):
    with pytest.raises(Kill):
        train_sasrec(
            data, CONFIG, tmp_path, verbose=0, callbacks=[_KillAtStep("SASRec", 7)]
        )
    other = _other_data(data)
    with pytest.raises(ValueError, match="belongs to other data"):
        train_sasrec(other, CONFIG, tmp_path, verbose=0)
    vocabulary = SequenceDataset(
        data.sequences,
        data.num_items,
        vocabulary=type(data.vocabulary)(
            [f"sku{i}" for i in range(1, data.num_items + 1)]
        ),
    )
    assert vocabulary.fingerprint()["sequences"] == data.fingerprint()["sequences"]
    with pytest.raises(ValueError, match="vocabulary"):
        train_sasrec(vocabulary, CONFIG, tmp_path, verbose=0)


@pytest.fixture
def interrupted(data, tmp_path):
    """A SASRec stage killed at step 9, after its first epoch's checkpoint."""
    with pytest.raises(Kill):
        train_sasrec(
            data, CONFIG, tmp_path, verbose=0, callbacks=[_KillAtStep("SASRec", 9)]
        )
    return tmp_path / "sasrec"


def test_a_deleted_checkpoint_restarts_the_stage_afresh(
    data, uninterrupted, interrupted
):
    # Without its checkpoint a stage holds no state: it starts over, and ends
    # as an uninterrupted run does (not with old evaluations or weights).
    import shutil

    shutil.rmtree(interrupted / "checkpoint")
    model, results = train_sasrec(data, CONFIG, interrupted.parent, verbose=0)
    _assert_same_run({"sasrec": (model, results)}, uninterrupted[1])


def test_partial_or_damaged_folders_are_refused_with_the_file_named(data, interrupted):
    workdir = interrupted.parent
    checkpoint = interrupted / "checkpoint"
    (best,) = checkpoint.glob("best-*.npz")
    (state,) = checkpoint.glob("state-*.npz")
    state_bytes = state.read_bytes()

    best.rename(best.with_suffix(".moved"))
    with pytest.raises(ValueError, match=rf"{best.name} is missing.*delete"):
        train_sasrec(data, CONFIG, workdir, verbose=0)
    best.with_suffix(".moved").rename(best)

    state.write_bytes(state_bytes[:100])
    with pytest.raises(
        ValueError, match=rf"could not read the checkpoint .*{state.name}"
    ):
        train_sasrec(data, CONFIG, workdir, verbose=0)
    state.write_bytes(state_bytes)

    stage = interrupted / "stage.json"
    stage_text = stage.read_text()
    stage.write_text(stage_text[:-20])
    with pytest.raises(ValueError, match=r"stage\.json is not valid JSON.*delete"):
        train_sasrec(data, CONFIG, workdir, verbose=0)
    stage.unlink()
    with pytest.raises(ValueError, match=r"holds \['checkpoint'\] but no stage\.json"):
        train_sasrec(data, CONFIG, workdir, verbose=0)
    stage.write_text(stage_text)

    # The unfinished state of an earlier keras-fame cannot be resumed exactly.
    (interrupted / "backup").mkdir()
    with pytest.raises(ValueError, match=r"holds \['backup'\].*earlier keras-fame"):
        train_sasrec(data, CONFIG, workdir, verbose=0)
    (interrupted / "backup").rmdir()

    # A checkpoint of another model (another architecture) is refused.
    bigger = dataclasses.replace(CONFIG, num_blocks=3)
    stage_record = json.loads(stage_text)
    stage_record["num_blocks"] = 3
    stage.write_text(json.dumps(stage_record))
    with pytest.raises(ValueError, match=rf"{state.name} is a checkpoint of another"):
        train_sasrec(data, bigger, workdir, verbose=0)
    stage.write_text(stage_text)

    # Once repaired, it resumes.
    assert train_sasrec(data, CONFIG, workdir, verbose=0)[1]["epochs_run"] == 3


def test_damaged_files_of_a_finished_folder_are_named(data, uninterrupted, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(uninterrupted[0], folder)
    for path in (folder / "config.json", folder / "sasrec" / "results.json"):
        text = path.read_text()
        path.write_text("{" + text[:10])
        with pytest.raises(ValueError, match=rf"{path.name} is not valid JSON"):
            two_stage(data, CONFIG, folder, verbose=0)
        path.write_text(text)
    model = folder / "fame" / "model.keras"
    content = model.read_bytes()
    model.write_bytes(content[: len(content) // 3])
    with pytest.raises(
        ValueError, match=r"could not load the model .*fame/model\.keras"
    ):
        two_stage(data, CONFIG, folder, verbose=0)
    model.unlink()
    with pytest.raises(
        ValueError,
        match=r"results\.json says the stage finished.*model\.keras is missing",
    ):
        two_stage(data, CONFIG, folder, verbose=0)
    model.write_bytes(content)
    runs = two_stage(data, CONFIG, folder, verbose=0)
    assert isinstance(runs["fame"][0], FAME)
    _assert_same_run(runs, uninterrupted[1])
