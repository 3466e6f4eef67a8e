"""The whole pipeline through kfp.local on a small real slice, one epoch, every artifact checked."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from digits.artifacts import Evaluation
from digits.data import ImageSet
from digits.local_run import LocalRunSettings, run_locally

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, train_csv, test_csv, mlflow_server):
    work = tmp_path_factory.mktemp("local-run")
    labels = work / "labels.csv"
    # Labels for the 60-row test slice, from the bundled held-out file.
    from digits.local_run import sample_data

    pd.read_csv(sample_data("test_labels.csv.gz")).head(60).to_csv(labels, index=False)
    settings = LocalRunSettings(
        train_data=str(train_csv),
        predict_data=str(test_csv),
        predict_labels=str(labels),
        output_dir=work,
        mlflow_uri=mlflow_server,
        experiment_name="test-local-pipeline",
        registered_model_name="test-local-pipeline-model",
        epochs=1,
    )
    summary = run_locally(settings)
    (run_dir,) = (work / "pipeline_root").iterdir()
    return summary, run_dir, mlflow_server


def _task(run_dir: Path, task: str, output: str) -> Path:
    path = run_dir / task / output
    assert path.exists(), f"{task} wrote no {output}"
    return path


def test_every_task_wrote_its_artifacts(local_run):
    _, run_dir, _ = local_run

    assert len(pd.read_parquet(_task(run_dir, "ingest-csv", "dataset"))) == 400
    assert len(pd.read_parquet(_task(run_dir, "ingest-csv-2", "dataset"))) == 60
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
    submission = pd.read_csv(_task(run_dir, "batch-predict", "submission"))
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == list(range(1, 61))
    assert len(pd.read_parquet(_task(run_dir, "batch-predict", "probabilities"))) == 60


def test_kfp_metrics_artifacts_were_recorded(local_run):
    _, run_dir, _ = local_run
    outputs = json.loads(_task(run_dir, "evaluate-model", "executor_output.json").read_text())
    metrics = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    confusion = outputs["artifacts"]["classification_metrics"]["artifacts"][0]["metadata"]
    assert len(confusion["confusionMatrix"]["rows"]) == 10


def test_summary_matches_mlflow_and_the_submission(local_run):
    summary, _, mlflow_server = local_run

    client = MlflowClient(mlflow_server)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.metrics["eval_accuracy"] == pytest.approx(summary.validation_accuracy)
    version = client.get_model_version("test-local-pipeline-model", summary.model_version)
    assert version.run_id == summary.mlflow_run_id
    assert Path(summary.predictions_path).name == "submission.csv"
    assert len(pd.read_csv(summary.predictions_path)) == 60
    assert Path(summary.model_path).exists()
    assert 0.0 <= summary.accuracy <= 1.0


def test_bad_input_fails_the_run_and_keeps_earlier_artifacts(tmp_path, sample_train, test_csv):
    broken = tmp_path / "train.csv"
    sample_train.head(50).drop(columns=["pixel783"]).to_csv(broken, index=False)
    settings = LocalRunSettings(
        train_data=str(broken),
        predict_data=str(test_csv),
        predict_labels=None,
        output_dir=tmp_path / "out",
        epochs=1,
    )

    with pytest.raises(RuntimeError, match="validate-data"):
        run_locally(settings)

    (run_dir,) = (tmp_path / "out" / "pipeline_root").iterdir()
    assert len(pd.read_parquet(_task(run_dir, "ingest-csv", "dataset"))) == 50
    report = json.loads(_task(run_dir, "validate-data", "report").read_text())
    assert report["missing_columns"] == ["pixel783"]
    assert not (run_dir / "train-model").exists()
