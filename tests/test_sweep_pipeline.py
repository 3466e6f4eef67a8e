"""A sweep inside the pipeline: the compiled DAG (the trial loop, its GPU placement and
parallelism, the collected trials into select_best, then register and the gate), and a real
3-trial sweep through `digits run` (kfp.local) against a real MLflow server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from digits.errors import SettingsError
from digits.pipelines.digits_pipeline import ClusterSettings, compile_pipeline
from digits.sweep import TrialRecord


def _compile(tmp_path, settings=None) -> tuple[dict, dict]:
    documents = list(
        yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", settings).read_text())
    )
    return documents[0], documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("sweep-compiled"))


def _dag(spec: dict, component: str) -> dict:
    return spec["components"][component]["dag"]["tasks"]


def test_the_sweep_branch_runs_when_sweep_is_set(compiled):
    spec, _ = compiled
    branches = _dag(spec, "comp-condition-branches-1")
    assert branches["condition-3"]["triggerPolicy"]["condition"] == (
        "!(inputs.parameter_values['pipelinechannel--sweep'] == '')"
    )
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["sweep"]["defaultValue"] == ""
    assert parameters["trials"]["defaultValue"] == 8
    assert parameters["sweep_seed"]["defaultValue"] == 0


def test_the_trials_fan_out_over_the_plan_at_the_compiled_parallelism(compiled, tmp_path):
    spec, _ = compiled
    loop = _dag(spec, "comp-condition-3")["for-loop-4"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == (
        "pipelinechannel--plan-trials-Output"
    )
    assert loop["iteratorPolicy"]["parallelismLimit"] == ClusterSettings().trial_parallelism
    narrow, _ = _compile(tmp_path, ClusterSettings(trial_parallelism=2))
    assert _dag(narrow, "comp-condition-3")["for-loop-4"]["iteratorPolicy"] == {
        "parallelismLimit": 2
    }
    with pytest.raises(SettingsError, match="--trial-parallelism"):
        ClusterSettings(trial_parallelism=-1)


def test_each_trial_takes_only_its_plan_item_and_artifacts_from_upstream(compiled):
    """kfp.local 2.17.3 would replace any upstream output parameter in the body by the item."""
    spec, _ = compiled
    body = _dag(spec, "comp-for-loop-4")
    assert {name: set(task.get("dependentTasks", [])) for name, task in body.items()} == {
        "train-trial": set(),
        "evaluate-trial": {"train-trial"},
    }
    for task in body.values():
        for name, source in task["inputs"]["parameters"].items():
            assert "taskOutputParameter" not in source, name
            if source.get("componentInputParameter", "").endswith("-loop-item"):
                assert source["parameterExpressionSelector"] == (
                    f'parseJson(string_value)["{name}"]'
                )
    item_fields = {
        name
        for task in body.values()
        for name, source in task["inputs"]["parameters"].items()
        if "parameterExpressionSelector" in source
    }
    assert item_fields == {
        "trial_id", "overrides", "parent_run_id", "experiment_id", "space_digest",
    }  # fmt: skip


def test_every_trial_trains_on_the_gpu_pool_as_the_single_training_does(compiled):
    spec, placed = compiled
    executors = spec["deploymentSpec"]["executors"]
    trial, single = executors["exec-train-trial"], executors["exec-train-model"]
    assert trial["container"]["resources"] == single["container"]["resources"]
    assert trial["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert trial["container"]["image"] == ClusterSettings().train_image
    for key in ("nodeSelector", "tolerations", "securityContext"):
        assert placed["exec-train-trial"][key] == placed["exec-train-model"][key], key
    assert placed["exec-train-trial"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert placed["exec-train-trial"]["securityContext"]["runAsNonRoot"] is True
    body = _dag(spec, "comp-for-loop-4")
    single_task = _dag(spec, "comp-condition-2")["train-model"]
    assert body["train-trial"]["retryPolicy"] == single_task["retryPolicy"]
    assert body["train-trial"]["cachingOptions"] == single_task["cachingOptions"] == {}
    # Checkpoints: the same settings as the single training's (each trial in its own folder).
    for name in ("checkpoint_root", "checkpoint_dir", "pipeline_run_id"):
        assert (
            body["train-trial"]["inputs"]["parameters"][name]
            == (single_task["inputs"]["parameters"][name])
        )


def test_select_best_collects_the_trials_and_its_winner_is_registered_and_gated(compiled):
    spec, _ = compiled
    sweep = _dag(spec, "comp-condition-3")
    collected = sweep["select-best"]["inputs"]["artifacts"]
    assert collected["trials"]["taskOutputArtifact"] == {
        "producerTask": "for-loop-4",
        "outputArtifactKey": "pipelinechannel--evaluate-trial-trial",
    }
    assert collected["models"]["taskOutputArtifact"] == {
        "producerTask": "for-loop-4",
        "outputArtifactKey": "pipelinechannel--train-trial-model",
    }
    register = sweep["register-model-2"]["inputs"]["artifacts"]
    for name, output in (("model", "model"), ("history", "history"), ("evaluation", "report")):
        assert register[name]["taskOutputArtifact"] == {
            "producerTask": "select-best",
            "outputArtifactKey": output,
        }
    gate = sweep["promote-model-2"]["inputs"]
    assert gate["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == "select-best"
    assert gate["parameters"]["model_version"]["taskOutputParameter"]["producerTask"] == (
        "register-model-2"
    )
    # Predictions and the pipeline's outputs take the version of whichever branch ran.
    outputs = spec["root"]["dag"]["outputs"]["parameters"]
    for name in ("mlflow_run_id", "model_version", "promotion_decision"):
        assert outputs[name]["valueFromParameter"]["producerSubtask"] == "condition-branches-1"
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["outputs"]["parameters"]
    assert all(
        {selector["producerSubtask"] for selector in output["valueFromOneof"]["parameterSelectors"]}
        == {"condition-2", "condition-3"}
        for output in branches.values()
    )


# --- A real sweep through `digits run` ----------------------------------------------------------

DIGITS = str(Path(sys.executable).with_name("digits"))
MODEL = "test-sweep-model"
# Three trials (a grid); 1e3 diverges: its loss is NaN within the first epoch.
SPACE = '{"learning_rate": [0.003, 1000.0, 0.001]}'


def _sweep_run(work: Path, train_csv, test_csv, mlflow_server, experiment, *extra):
    result = subprocess.run(
        [
            DIGITS, "run", "--data", str(train_csv), "--predict-data", str(test_csv),
            "--output-dir", str(work), "--mlflow-uri", mlflow_server,
            "--experiment", experiment, "--model-name", MODEL, "--epochs", "1",
            "--batch-size", "32", "--no-baseline", "--summary-json", str(work / "summary.json"),
            *extra,
        ],
        capture_output=True, text=True, timeout=1500, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (work / "pipeline_root").iterdir()
    return result, json.loads((work / "summary.json").read_text()), run_dir


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, train_csv, test_csv, mlflow_server):
    work = tmp_path_factory.mktemp("sweep-run")
    experiment = f"test-sweep-{os.getpid()}"
    return (
        *_sweep_run(
            work, train_csv, test_csv, mlflow_server, experiment,
            "--sweep", SPACE, "--trials", "3", "--sweep-seed", "5", "--trial-parallelism", "1",
        ),
        experiment,
    )  # fmt: skip


def _records(run_dir: Path) -> list[TrialRecord]:
    paths = sorted(run_dir.glob("for-loop-*-iteration-*/evaluate-trial/trial"))
    return sorted((TrialRecord.read(path) for path in paths), key=lambda r: r.trial_id)


@pytest.mark.slow
def test_a_failing_trial_leaves_the_others_and_the_sweep_succeeds(sweep_run):
    result, summary, run_dir, _ = sweep_run
    records = _records(run_dir)
    assert [(r.name, r.overrides["learning_rate"]) for r in records] == [
        ("trial-00", 0.003), ("trial-01", 1000.0), ("trial-02", 0.001),
    ]  # fmt: skip
    assert [r.status for r in records] == ["succeeded", "failed", "succeeded"]
    assert "diverged" in records[1].error
    table = next(run_dir.glob("select-best/table")).read_text()
    assert "failed: training diverged" in table
    assert all(record.name in table for record in records)
    best = max((r for r in records if r.succeeded), key=lambda r: (r.val_accuracy, -r.trial_id))
    assert summary["validation_accuracy"] == pytest.approx(best.val_accuracy)
    assert summary["promotion_decision"] in ("champion", "challenger")
    assert "train-model" not in {path.name for path in run_dir.iterdir()}  # no single training


@pytest.mark.slow
def test_one_parent_run_three_children_and_the_best_childs_model_is_registered(
    sweep_run, mlflow_server
):
    _, summary, run_dir, experiment = sweep_run
    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parents = [run for run in runs if run.data.tags.get("digits.sweep") == "parent"]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(runs) == 4
    (parent,) = parents
    assert parent.info.run_id == summary["mlflow_run_id"]  # what the gate and predictions tag
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert sorted(child.data.tags["sweep_trial"] for child in children) == [
        "trial-00", "trial-01", "trial-02",
    ]  # fmt: skip
    statuses = {child.data.tags["sweep_trial"]: child.info.status for child in children}
    assert statuses == {"trial-00": "FINISHED", "trial-01": "FAILED", "trial-02": "FINISHED"}
    params = parent.data.params
    assert (params["sweep_space"], params["sweep_engine"]) == ("inline", "grid")
    assert (params["sweep_trials"], params["sweep_seed"]) == ("3", "5")
    best_id = parent.data.tags["best_trial_run_id"]
    best = client.get_run(best_id)
    assert best.data.tags["sweep_best"] == "true"
    assert parent.data.tags["best_trial"] == best.data.tags["sweep_trial"]
    # The parent holds the winner's recipe and curves, as a single training's run would.
    assert params["learning_rate"] == best.data.params["learning_rate"]
    assert parent.data.metrics["sweep/trials_failed"] == 1

    version = client.get_model_version(MODEL, summary["model_version"])
    assert version.run_id == parent.info.run_id
    assert version.tags["sweep_trial_run_id"] == best_id
    assert best.data.tags["registered_model_version"] == f"{MODEL}/{summary['model_version']}"
    # Same weights: the registered version's model is the best child's.
    assert _weights_digest(f"models:/{MODEL}/{version.version}", mlflow_server) == (
        _weights_digest(_child_model_uri(client, experiment_id, best_id), mlflow_server)
    )


@pytest.mark.slow
def test_the_same_seed_plans_the_same_trials(sweep_run, tmp_path, train_csv, test_csv):
    """The plan alone (a random engine over the same space): same seed, same trials."""
    from digits.components.plan_trials import plan_trials

    space = '{"engine": "random", "learning_rate": {"log_range": [0.001, 0.01]}}'
    first = plan_trials(space, 3, 5, "fast", epochs=1)
    assert plan_trials(space, 3, 5, "fast", epochs=1) == first
    assert plan_trials(space, 3, 6, "fast", epochs=1) != first
    # And the run's own plan is what the same arguments plan again.
    _, _, run_dir, _ = sweep_run
    planned = json.loads(next(run_dir.glob("plan-trials/executor_output.json")).read_text())
    again = plan_trials(SPACE, 3, 5, "fast", epochs=1, batch_size=32)
    assert [t["overrides"] for t in planned["parameterValues"]["Output"]] == [
        t["overrides"] for t in again
    ]


def _child_model_uri(client, experiment_id: str, run_id: str) -> str:
    (model,) = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    return f"models:/{model.model_id}"


def _weights_digest(model_uri: str, tracking_uri: str) -> str:
    import hashlib

    import mlflow.keras

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.keras.load_model(model_uri)
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def test_a_bad_spec_is_refused_before_anything_runs(tmp_path, train_csv):
    result = subprocess.run(
        [DIGITS, "run", "--data", str(train_csv), "--output-dir", str(tmp_path / "out"),
         "--sweep", '{"learning_rat": {"range": [0.1, 0.01]}}'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("digits run: --sweep: sweep: learning_rat: not a TrainConfig setting")
    assert "did you mean learning_rate" in line
    assert not (tmp_path / "out" / "pipeline_root").exists()
