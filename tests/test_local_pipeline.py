"""The whole pipeline through `digits run` (kfp.local) on a small real slice, as a user runs it.

Two runs share one MLflow experiment: the first (1 epoch) becomes champion; the second (2
epochs, 3 prediction shards, predicting with version 1 pinned) must line up with it in MLflow
and give the same submission as the single-shard run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from digits.artifacts import Evaluation
from digits.data import ImageSet, sample_data

pytestmark = pytest.mark.slow

DIGITS = str(Path(sys.executable).with_name("digits"))
MODEL = "test-local-pipeline-model"
EXPERIMENT = "test-local-pipeline"
STEP_TITLES = ("ingest", "validate", "split", "train", "evaluate", "register", "promote")


def digits_run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DIGITS, "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    pd.read_csv(sample_data("test_labels.csv.gz")).head(60).to_csv(path, index=False)
    return path


def _run(work: Path, train_csv, test_csv, labels, mlflow_server, *extra: str):
    result = digits_run(
        "--data", str(train_csv),
        "--predict-data", str(test_csv),
        "--predict-labels", str(labels),
        "--output-dir", str(work),
        "--mlflow-uri", mlflow_server,
        "--experiment", EXPERIMENT,
        "--model-name", MODEL,
        "--summary-json", str(work / "summary.json"),
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (work / "pipeline_root").iterdir()
    return result, json.loads((work / "summary.json").read_text()), run_dir


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, train_csv, test_csv, labels, mlflow_server):
    work = tmp_path_factory.mktemp("first-run")
    return _run(work, train_csv, test_csv, labels, mlflow_server, "--epochs", "1")


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, first_run, train_csv, test_csv, labels, mlflow_server):
    work = tmp_path_factory.mktemp("second-run")
    first_version = first_run[1]["model_version"]
    return _run(
        work, train_csv, test_csv, labels, mlflow_server,
        "--epochs", "2",
        "--predict-shards", "3",
        "--predict-model-uri", f"models:/{MODEL}/{first_version}",
    )  # fmt: skip


def _task(run_dir: Path, task: str, output: str) -> Path:
    path = run_dir / task / output
    assert path.exists(), f"{task} wrote no {output}"
    return path


def test_the_report_is_one_line_per_step_and_the_summary(first_run):
    result, summary, _ = first_run
    lines = result.stdout.strip().splitlines()

    assert len(lines) <= 40, result.stdout
    steps = [line for line in lines if line.startswith("✓ ")]
    titles = [line.split()[1] for line in steps]
    assert set(STEP_TITLES) <= set(titles)
    assert titles.count("ingest") == titles.count("validate") == 2
    assert "Executor" not in result.stdout and "executor_input" not in result.stdout
    for key in ("held-out accuracy", "promotion", "predicted with", "MLflow run", "task logs"):
        assert any(line.strip().startswith(key) for line in lines), key
    # Where the time went: each step's seconds, and the wall time against the train step's.
    assert 0 < summary["train_seconds"] == summary["step_seconds"]["train-model"]
    assert summary["train_seconds"] < summary["seconds"]
    (wall,) = [line for line in lines if line.strip().startswith("wall time")]
    ratio = summary["seconds"] / summary["train_seconds"]
    assert wall.strip().endswith(f"{ratio:.2f}x the train step ({summary['train_seconds']:.0f} s)")
    logs = Path(summary["logs_dir"])
    assert {"pipeline.log", "train-model.log", "register-model.log"} <= {
        path.name for path in logs.iterdir()
    }
    assert "epoch 1/1" in (logs / "train-model.log").read_text()


def test_every_task_wrote_its_artifacts(first_run):
    _, _, run_dir = first_run

    for task in ("ingest-csv", "ingest-csv-2"):
        source = json.loads((_task(run_dir, task, "dataset") / "source.json").read_text())
        assert len(source["sha256"]) == 64
    for task, rows in (("validate-data", 400), ("validate-data-2", 60)):
        assert len(pd.read_parquet(_task(run_dir, task, "valid"))) == rows
        assert len(pd.read_parquet(_task(run_dir, task, "rejected"))) == 0
        assert json.loads(_task(run_dir, task, "report").read_text())["valid_rows"] == rows
    train = ImageSet.load(_task(run_dir, "normalize-and-split", "train"))
    validation = ImageSet.load(_task(run_dir, "normalize-and-split", "validation"))
    assert (len(train), len(validation)) == (360, 40)
    model = keras.saving.load_model(_task(run_dir, "train-model", "model") / "model.keras")
    assert model.output_shape == (None, 10)
    assert len(json.loads(_task(run_dir, "train-model", "history").read_text())) == 1
    evaluation = Evaluation.read(_task(run_dir, "evaluate-model", "report"))
    assert np.array(evaluation.confusion_matrix).sum() == 40
    decision = _task(run_dir, "promote-model", "decision_report").read_text()
    assert "promoted to `champion`" in decision
    submission = pd.read_csv(_task(run_dir, "collect-predictions", "submission"))
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == list(range(1, 61))
    assert len(pd.read_parquet(_task(run_dir, "collect-predictions", "probabilities"))) == 60


def test_kfp_metrics_artifacts_were_recorded(first_run):
    _, _, run_dir = first_run
    outputs = json.loads(_task(run_dir, "evaluate-model", "executor_output.json").read_text())
    metrics = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    confusion = outputs["artifacts"]["classification_metrics"]["artifacts"][0]["metadata"]
    assert len(confusion["confusionMatrix"]["rows"]) == 10


def test_summary_matches_mlflow_and_the_registry(first_run, mlflow_server):
    _, summary, _ = first_run

    client = MlflowClient(mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["val/eval/accuracy"] == pytest.approx(summary["validation_accuracy"])
    version = client.get_model_version(MODEL, summary["model_version"])
    assert version.run_id == summary["mlflow_run_id"]
    assert summary["promotion_decision"] == "champion"
    assert summary["predicted_with"] == (
        f"{MODEL} v{summary['model_version']} (models:/{MODEL}@champion)"
    )
    assert Path(summary["predictions_path"]).name == "submission.csv"
    assert len(pd.read_csv(summary["predictions_path"])) == 60
    assert 0.0 <= summary["accuracy"] <= 1.0
    # The shard tagged this run's MLflow run with the exact version it predicted with.
    assert run.data.tags["predicted_with"] == f"{MODEL} v{summary['model_version']}"
    assert run.data.tags["predicted_model_uri"] == f"models:/{MODEL}/{summary['model_version']}"


def test_two_runs_line_up_in_mlflow_for_comparison(first_run, second_run, mlflow_server):
    client = MlflowClient(mlflow_server)
    first = client.get_run(first_run[1]["mlflow_run_id"])
    second = client.get_run(second_run[1]["mlflow_run_id"])

    assert first.info.experiment_id == second.info.experiment_id
    assert first.info.run_name != second.info.run_name  # the epochs differ, and the name says so
    assert set(first.data.params) == set(second.data.params)
    assert (first.data.params["epochs"], second.data.params["epochs"]) == ("1", "2")
    assert set(first.data.metrics) == set(second.data.metrics)
    # The second run predicted with version 1 pinned, in all three shards, and says so.
    assert second.data.tags["predicted_with"] == f"{MODEL} v{first_run[1]['model_version']}"

    def inputs(run):
        return sorted(
            (i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"])
            for i in run.inputs.dataset_inputs
        )

    assert (
        inputs(first)
        == inputs(second)
        == [
            ("train.csv.gz", "training"),
            ("validation", "validation"),
        ]
    )

    def pictures(run):
        return {a.path for a in client.list_artifacts(run.info.run_id, "plots")}

    assert (
        pictures(first)
        == pictures(second)
        == {
            "plots/confusion_matrix.png",
            "plots/misclassified.png",
            "plots/training_curves.png",
        }
    )


def test_three_prediction_shards_give_the_single_shard_submission(first_run, second_run):
    _, first_summary, _ = first_run
    _, second_summary, run_dir = second_run

    assert second_summary["predicted_with"].startswith(
        f"{MODEL} v{first_summary['model_version']} "
    )
    shards = sorted(run_dir.glob("for-loop-*-iteration-*"))
    assert len(shards) == 3
    plans = [
        json.loads((shard / "batch-predict" / "executor_output.json").read_text())["artifacts"][
            "submission"
        ]["artifacts"][0]["metadata"]
        for shard in shards
    ]
    assert [(plan["shard_index"], plan["model_version"]) for plan in plans] == [
        (index, first_summary["model_version"]) for index in range(3)
    ]
    assert pd.read_csv(second_summary["predictions_path"]).equals(
        pd.read_csv(first_summary["predictions_path"])
    )


def test_a_failed_step_ends_with_its_own_message_and_keeps_earlier_artifacts(
    tmp_path, sample_train, test_csv
):
    broken = tmp_path / "train.csv"
    sample_train.head(50).drop(columns=["pixel783"]).to_csv(broken, index=False)

    result = digits_run(
        "--data", str(broken), "--predict-data", str(test_csv),
        "--output-dir", str(tmp_path / "out"), "--epochs", "1",
    )  # fmt: skip

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    *_, log_line, last = result.stderr.strip().splitlines()
    assert last.startswith("digits run: validate-data failed: ")
    assert "missing pixel783" in last and str(broken) in last
    log_path = Path(log_line.split("full log: ", 1)[1])
    assert log_path.name == "validate-data.log" and "Traceback" in log_path.read_text()

    (run_dir,) = (tmp_path / "out" / "pipeline_root").iterdir()
    assert (_task(run_dir, "ingest-csv", "dataset") / "rows.csv").exists()
    report = json.loads(_task(run_dir, "validate-data", "report").read_text())
    assert "missing pixel783" in report["error"]
    assert not (run_dir / "train-model").exists()
