"""Step 6: register_model, against a real `mlflow server` on 127.0.0.1."""

import json
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from kfp.dsl import Artifact, Dataset, Model
from mlflow import MlflowClient

from digits.app.local_run import local_mlflow_store
from digits.artifacts import TRAINING_FILENAME
from digits.components import register_model
from digits.components.evaluate_model import evaluate_model
from digits.errors import RegistrationError
from digits.run_logging import RunRecord
from digits.tracking import PIPELINE_RUN_TAG


def _chart_sections(metric_keys) -> list[str]:
    """MLflow 3's Model metrics tab: one section per key up to its last "/", sorted by name."""
    return sorted({key.rsplit("/", 1)[0] if "/" in key else "" for key in metric_keys})


@pytest.fixture(scope="module")
def evaluation_path(tmp_path_factory, trained_model, split_sets):
    path = tmp_path_factory.mktemp("evaluation") / "report.json"
    evaluate_model(trained_model[0], split_sets[1], path)
    return path


def _record(trained_model, evaluation_path, split_sets, run_id: str, **changes) -> RunRecord:
    fields = dict(
        model_dir=trained_model[0],
        history_path=trained_model[1],
        evaluation_path=evaluation_path,
        validation_path=split_sets[1],
        data_report_path=split_sets[1].parent / "report.json",
        pipeline_run_id=run_id,
        pipeline_run_name=f"run-{run_id}",
        train_data_uri="/data/train.csv",
        data_params={"train_data_uri": "/data/train.csv", "validation_fraction": 0.25},
    )
    return RunRecord(**{**fields, **changes})


def _runs(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id])


def test_logs_a_run_a_person_can_compare_and_registers_a_version(
    mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    model_name = f"{experiment_name}-model"
    registration = register_model.register_model(
        _record(
            trained_model, evaluation_path, split_sets, "kfp-1", kfp_ui_url="http://kfp.example"
        ),
        tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=model_name,
    )

    client = MlflowClient(mlflow_server)
    run = client.get_run(registration.run_id)
    training = json.loads((trained_model[0] / TRAINING_FILENAME).read_text())
    assert run.info.status == "FINISHED"
    assert run.info.start_time == training["result"]["started_at_ms"]  # spans the training
    assert (
        run.data.params["epochs"] == "1" and run.data.params["train_data_uri"] == "/data/train.csv"
    )
    metrics = set(run.data.metrics)
    assert {"val/eval/accuracy", "val/eval/macro_f1", "val/per_digit/recall_7"} <= metrics
    assert {"train/loss", "val/accuracy"} <= metrics
    assert "accuracy" not in run.data.metrics  # every name says its split
    assert len([key for key in metrics if key.startswith("val/per_digit/")]) == 30
    # The Model metrics tab opens on the training curves; the 30 per-digit charts come last.
    assert _chart_sections(metrics) == ["train", "val", "val/eval", "val/per_digit"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")] == [1]
    tags = run.data.tags
    assert tags["pipeline_name"] == "digits-recognizer" and tags["kfp_run_id"] == "kfp-1"
    assert tags["kfp_run_url"] == "http://kfp.example/#/runs/details/kfp-1"
    assert tags["keras_backend"] and tags["project_version"] and tags["model_family"] == "cnn"
    assert tags["compute_dtype"] in {"float32", "mixed_bfloat16", "mixed_float16"}
    assert tags[PIPELINE_RUN_TAG] == "kfp-1/cnn"
    assert not [key for key in tags if key.startswith("digits_")]  # bookkeeping is prefixed

    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"]
        for i in run.inputs.dataset_inputs
    }
    assert contexts == {"train.csv": "training", "validation": "validation"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/confusion_matrix.png",
        "plots/training_curves.png",
        "plots/misclassified.png",
    }
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "evaluation.json",
        "history.json",
        "training.json",
        "data",
    }

    version = client.get_model_version(model_name, registration.model_version)
    assert version.run_id == registration.run_id and version.description
    assert client.get_registered_model(model_name).description
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    (logged,) = client.search_logged_models([experiment_id])
    assert logged.source_run_id == registration.run_id
    assert logged.name == "cnn"  # named by model family, not "model"
    # Linked as the run's output: the run page's "Logged models" and the compare view show it.
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(logged.model_id, 0)]
    linked = json.loads(logged.tags["mlflow.modelVersions"])
    assert [(entry["name"], str(entry["version"])) for entry in linked] == [(model_name, "1")]
    on_validation = {m.key for m in logged.metrics if m.dataset_name == "validation"}
    assert "val/eval/accuracy" in on_validation  # the Models view ranks by these

    import mlflow

    loaded = mlflow.pyfunc.load_model(registration.model_uri)  # served artifacts round-trip
    assert loaded.metadata.get_input_schema() is not None
    by_run = mlflow.pyfunc.load_model(f"runs:/{registration.run_id}/cnn")  # the run's model
    assert by_run.metadata.model_id == logged.model_id


def test_the_baseline_is_logged_as_the_runs_sklearn_baseline_model(
    tmp_path, mlflow_server, experiment_name, split_sets
):
    from digits.components.train_baseline import train_baseline

    train_baseline(split_sets[0], tmp_path / "model", tmp_path / "history.json")
    evaluate_model(tmp_path / "model", split_sets[1], tmp_path / "evaluation.json")
    registration = register_model.register_model(
        RunRecord(
            model_dir=tmp_path / "model",
            history_path=tmp_path / "history.json",
            evaluation_path=tmp_path / "evaluation.json",
            validation_path=split_sets[1],
            pipeline_run_id="baseline",
        ),
        tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=f"{experiment_name}-model",
    )

    client = MlflowClient(mlflow_server)
    (logged,) = client.search_logged_models([registration.experiment_id])
    assert (logged.name, logged.source_run_id) == ("sklearn-baseline", registration.run_id)
    run = client.get_run(registration.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]
    assert _chart_sections(run.data.metrics)[-2:] == ["val/eval", "val/per_digit"]

    import mlflow

    loaded = mlflow.pyfunc.load_model(f"models:/{experiment_name}-model/1")
    assert loaded.metadata.model_id == logged.model_id
    # Its requirements are named, pinned to what fitted it (not inferred in another process).
    from importlib.metadata import version

    uri = f"models:/{experiment_name}-model/1/requirements.txt"
    requirements = Path(mlflow.artifacts.download_artifacts(uri)).read_text().split()
    assert f"scikit-learn=={version('scikit-learn')}" in requirements
    assert f"skops=={version('skops')}" in requirements


def test_a_retried_task_returns_the_same_run_and_version(
    mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    kwargs = dict(
        tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=f"{experiment_name}-model",
    )
    record = _record(trained_model, evaluation_path, split_sets, "a")
    first = register_model.register_model(record, **kwargs)
    retry = register_model.register_model(record, **kwargs)
    other = register_model.register_model(
        _record(trained_model, evaluation_path, split_sets, "b"), **kwargs
    )

    assert retry == first
    assert (first.model_version, other.model_version) == ("1", "2")
    client = MlflowClient(mlflow_server)
    assert len(_runs(client, experiment_name)) == 2
    history = client.get_metric_history(first.run_id, "val/accuracy")
    assert [m.step for m in history] == [1]  # the retry logged no epoch twice
    assert len(client.get_run(first.run_id).outputs.model_outputs) == 1  # linked once


def test_a_lost_create_answer_still_gives_one_run_and_one_version(
    mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    model_name = f"{experiment_name}-model"
    lost = {
        "/api/2.0/mlflow/runs/create": 1,
        "/api/2.0/mlflow/model-versions/create": 1,
        "/api/2.0/mlflow/logged-models": 1,
        "/api/2.0/mlflow/runs/outputs": 1,
    }
    with FaultProxy(mlflow_server, lost) as proxy:
        registration = register_model.register_model(
            _record(trained_model, evaluation_path, split_sets, "flaky"),
            tracking_uri=proxy.url,
            experiment_name=experiment_name,
            registered_model_name=model_name,
            timeout_s=60,
        )

    assert dict(proxy.failed) == lost  # every create was committed and its answer lost once
    client = MlflowClient(mlflow_server)
    assert [r.info.run_id for r in _runs(client, experiment_name)] == [registration.run_id]
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == ["1"]
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    (logged,) = client.search_logged_models([experiment_id])
    outputs = client.get_run(registration.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [logged.model_id]


def test_a_server_that_stays_down_is_one_line_and_a_later_retry_registers_once(
    mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    record = _record(trained_model, evaluation_path, split_sets, "later")
    with pytest.raises(RegistrationError) as error:
        register_model.register_model(
            record,
            tracking_uri="http://127.0.0.1:9",
            experiment_name=experiment_name,
            registered_model_name="never",
            timeout_s=3,
        )
    message = str(error.value)
    assert message.startswith("MLflow at http://127.0.0.1:9: ") and "\n" not in message
    assert "after retrying for 3 s" in message

    kwargs = dict(experiment_name=experiment_name, registered_model_name=f"{experiment_name}-m")
    first = register_model.register_model(record, tracking_uri=mlflow_server, **kwargs)
    again = register_model.register_model(record, tracking_uri=mlflow_server, **kwargs)
    assert first.model_version == again.model_version == "1"


def test_with_kfps_mlflow_plugin_it_logs_into_the_parent_run(
    monkeypatch, mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    parent = client.create_run(experiment_id, run_name="kfp-plugin-parent")
    config = {
        "endpoint": mlflow_server,
        "parentRunId": parent.info.run_id,
        "experimentId": experiment_id,
        "authType": "NONE",
    }
    monkeypatch.setenv("KFP_MLFLOW_CONFIG", json.dumps(config))

    registration = register_model.register_model(
        _record(trained_model, evaluation_path, split_sets, "plugged"),
        tracking_uri="http://ignored.invalid:5000",  # the plugin's endpoint wins
        experiment_name="ignored",
        registered_model_name=f"{experiment_name}-model",
    )

    assert registration.run_id == parent.info.run_id
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [parent.info.run_id]
    parent_run = client.get_run(parent.info.run_id)
    assert "val/eval/accuracy" in parent_run.data.metrics
    assert len(parent_run.outputs.model_outputs) == 1  # the plugin's run shows the model
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"  # the plugin ends it
    assert client.get_experiment_by_name("ignored") is None


def test_embedded_sqlite_store_works_without_a_server(
    tmp_path, trained_model, evaluation_path, split_sets
):
    tracking_uri, artifact_location = local_mlflow_store(tmp_path)

    registration = register_model.register_model(
        _record(trained_model, evaluation_path, split_sets, "local"),
        tracking_uri=tracking_uri,
        experiment_name="digits",
        registered_model_name="digits-cnn",
        artifact_location=artifact_location,
    )

    assert registration.model_version == "1"
    assert any((tmp_path / "mlflow" / "artifacts").rglob("MLmodel"))


def test_wrapper_returns_run_id_and_version(
    mlflow_server, experiment_name, trained_model, evaluation_path, split_sets
):
    outputs = register_model.component("digits:test").python_func(
        model=Model(name="model", uri=str(trained_model[0])),
        history=Artifact(name="history", uri=str(trained_model[1])),
        evaluation=Artifact(name="evaluation", uri=str(evaluation_path)),
        validation=Dataset(name="validation", uri=str(split_sets[1])),
        data_report=Artifact(name="report", uri=str(split_sets[1].parent / "report.json")),
        mlflow_tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        registered_model_name=f"{experiment_name}-model",
        mlflow_artifact_location="",
        train_data_uri="train.csv",
        validation_fraction=0.25,
        split_seed=2,
        run_name="my own name",
        register_version=True,
        kfp_ui_url="",
        mlflow_timeout_s=60.0,
        pipeline_run_id="wrapped",
        pipeline_run_name="wrapped-run",
    )

    assert outputs.model_version == "1"
    run = MlflowClient(mlflow_server).get_run(outputs.mlflow_run_id)
    assert run.data.params["split_seed"] == "2" and run.info.run_name == "my own name"
