"""Step 6: register_model, against a real `mlflow server` on 127.0.0.1."""

import pytest
from kfp.dsl import Artifact, Model
from mlflow import MlflowClient

from digits.components import register_model
from digits.components.evaluate_model import evaluate_model
from digits.components.register_model import PIPELINE_RUN_TAG, RunRecord
from digits.errors import RegistrationError
from digits.local_run import local_mlflow_store


@pytest.fixture(scope="module")
def evaluation_path(tmp_path_factory, trained_model, split_sets):
    path = tmp_path_factory.mktemp("evaluation") / "report.json"
    evaluate_model(trained_model[0], split_sets[1], path)
    return path


def _record(trained_model, evaluation_path, run_id: str) -> RunRecord:
    return RunRecord(
        model_dir=trained_model[0],
        history_path=trained_model[1],
        evaluation_path=evaluation_path,
        pipeline_run_id=run_id,
        pipeline_run_name=f"run-{run_id}",
        data_params={"train_data_uri": "train.csv", "validation_fraction": 0.25},
    )


def test_logs_params_metrics_model_and_registers_a_version(
    mlflow_server, experiment_name, trained_model, evaluation_path
):
    model_name = f"{experiment_name}-model"
    registration = register_model.register_model(
        _record(trained_model, evaluation_path, "kfp-1"),
        tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=model_name,
    )

    client = MlflowClient(mlflow_server)
    run = client.get_run(registration.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-kfp-1"
    assert run.data.params["epochs"] == "1" and run.data.params["train_data_uri"] == "train.csv"
    assert {"eval_accuracy", "eval_macro_f1", "eval_f1_7", "val_accuracy", "train_seconds"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "evaluation.json",
        "history.json",
        "confusion_matrix.png",
    }
    version = client.get_model_version(model_name, registration.model_version)
    assert version.run_id == registration.run_id
    assert version.tags[PIPELINE_RUN_TAG] == "kfp-1"
    assert registration.model_uri == f"models:/{model_name}/1"

    import mlflow

    loaded = mlflow.pyfunc.load_model(registration.model_uri)  # served artifacts round-trip
    assert loaded.metadata.get_input_schema() is not None


def test_a_retried_task_returns_the_same_version(
    mlflow_server, experiment_name, trained_model, evaluation_path
):
    kwargs = dict(
        tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=f"{experiment_name}-model",
    )
    first = register_model.register_model(_record(trained_model, evaluation_path, "a"), **kwargs)
    retry = register_model.register_model(_record(trained_model, evaluation_path, "a"), **kwargs)
    other = register_model.register_model(_record(trained_model, evaluation_path, "b"), **kwargs)

    assert retry == first
    assert (first.model_version, other.model_version) == ("1", "2")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(experiment_name)
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_unreachable_server_is_one_clear_line(
    monkeypatch, experiment_name, trained_model, evaluation_path
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with pytest.raises(RegistrationError) as error:
        register_model.register_model(
            _record(trained_model, evaluation_path, "x"),
            tracking_uri="http://127.0.0.1:9",
            experiment_name=experiment_name,
            registered_model_name="never",
        )
    message = str(error.value)
    assert message.startswith("MLflow at http://127.0.0.1:9: ") and "\n" not in message
    assert "check mlflow_tracking_uri" in message


def test_embedded_sqlite_store_works_without_a_server(tmp_path, trained_model, evaluation_path):
    tracking_uri, artifact_location = local_mlflow_store(tmp_path)

    registration = register_model.register_model(
        _record(trained_model, evaluation_path, "local"),
        tracking_uri=tracking_uri,
        experiment_name="digits",
        registered_model_name="digits-cnn",
        artifact_location=artifact_location,
    )

    assert registration.model_version == "1"
    assert any((tmp_path / "mlflow" / "artifacts").rglob("MLmodel"))


def test_wrapper_returns_run_id_and_version(
    mlflow_server, experiment_name, trained_model, evaluation_path
):
    outputs = register_model.component("digits:test").python_func(
        model=Model(name="model", uri=str(trained_model[0])),
        history=Artifact(name="history", uri=str(trained_model[1])),
        evaluation=Artifact(name="evaluation", uri=str(evaluation_path)),
        mlflow_tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=f"{experiment_name}-model",
        mlflow_artifact_location="",
        train_data_uri="train.csv",
        validation_fraction=0.25,
        split_seed=2,
        pipeline_run_id="wrapped",
        pipeline_run_name="wrapped-run",
    )

    assert outputs.model_version == "1"
    assert (
        MlflowClient(mlflow_server).get_run(outputs.mlflow_run_id).data.params["split_seed"] == "2"
    )
