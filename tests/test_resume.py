"""Resume after preemption: a real SIGKILL to `digits run`'s process group mid-training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from digits.checkpoint import LATEST, STATE_FILE

pytestmark = pytest.mark.slow

EPOCHS = 4


def _digits_run(train_csv, test_csv, work: Path, mlflow_uri: str, experiment: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("digits")), "run",
        "--data", str(train_csv), "--predict-data", str(test_csv),
        "--epochs", str(EPOCHS), "--batch-size", "32", "--no-baseline",
        "--checkpoint-dir", str(work / "checkpoints"),
        "--output-dir", str(work / "out"),
        "--mlflow-uri", mlflow_uri, "--experiment", experiment,
        "--model-name", f"{experiment}-model",
        "--summary-json", str(work / "summary.json"),
    ]  # fmt: skip


def _checkpointed_epochs(folder: Path) -> int:
    try:
        epoch_dir = json.loads((folder / LATEST).read_text())["epoch_dir"]
        return json.loads((folder / epoch_dir / STATE_FILE).read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_run_resumes_after_its_last_checkpoint(
    tmp_path, train_csv, test_csv, mlflow_server, experiment_name
):
    command = _digits_run(train_csv, test_csv, tmp_path, mlflow_server, experiment_name)
    log = tmp_path / "first.log"
    with open(log, "w") as output:
        # Its own process group, as a pod is: the kill takes the kfp.local task processes too.
        first = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 600
        while _checkpointed_epochs(tmp_path / "checkpoints") < 1:
            assert first.poll() is None, f"run ended before a checkpoint: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_after = _checkpointed_epochs(tmp_path / "checkpoints")
    assert 1 <= killed_after < EPOCHS, "the kill must land during training"

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # The step report says it resumed; the train step's own lines are in its log.
    assert "resumed after epoch" in second.stdout
    output = (tmp_path / "out" / "logs" / "train-model.log").read_text()
    resumed_after = int(output.split("resuming after epoch ")[1].split()[0])
    assert resumed_after >= killed_after
    # Only the epochs after the checkpoint ran again.
    assert f"epoch {resumed_after}/{EPOCHS} " not in output
    assert f"epoch {EPOCHS}/{EPOCHS} " in output

    summary = json.loads((tmp_path / "summary.json").read_text())
    history = json.loads(Path(summary["model_path"]).with_name("training.json").read_text())
    assert history["result"]["epochs_run"] == EPOCHS
    epochs = json.loads((Path(summary["model_path"]).parents[1] / "history").read_text())
    assert [record["epoch"] for record in epochs] == list(range(1, EPOCHS + 1))
    assert history["result"]["resumed_after_epoch"] == resumed_after
    steps = [
        metric.step
        for metric in MlflowClient(mlflow_server).get_metric_history(
            summary["mlflow_run_id"], "val/accuracy"
        )
    ]
    assert sorted(steps) == list(range(1, EPOCHS + 1))
