"""The sweep's steps: plan_trials, train_trial, evaluate_trial, select_best (each as a function
and through its KFP wrapper), on a small real slice and against a real MLflow server."""

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Model
from mlflow import MlflowClient

from digits.artifacts import MODEL_FILENAME, TRAINING_FILENAME
from digits.components import evaluate_trial, plan_trials, select_best, train_trial
from digits.config import resolve_recipe
from digits.errors import SweepError
from digits.evaluation import evaluate_probabilities
from digits.sweep import TRIAL_FILENAME, TrialRecord, parse_space
from digits.sweep_tracking import (
    SPACE_DIGEST_TAG,
    TRIAL_STATUS_TAG,
    TRIAL_VALUE_TAG,
)

GRID = '{"learning_rate": [0.003, 1000.0]}'  # the second diverges: NaN loss in its first epoch


def test_plan_is_reproducible_and_carries_everything_a_trial_needs():
    plan = plan_trials.plan_trials("lr-schedule", 3, 11, "fast", epochs=1)
    assert plan == plan_trials.plan_trials("lr-schedule", 3, 11, "fast", epochs=1)
    assert plan != plan_trials.plan_trials("lr-schedule", 3, 12, "fast", epochs=1)
    assert [trial["trial_name"] for trial in plan] == ["trial-00", "trial-01", "trial-02"]
    assert {trial["parent_run_id"] for trial in plan} == {""}  # not logged
    assert set(json.loads(plan[0]["overrides"])) == {
        "learning_rate",
        "warmup_fraction",
        "schedule",
    }
    assert len({trial["space_digest"] for trial in plan}) == 1


def test_a_bad_spec_or_recipe_fails_the_plan_in_one_line():
    with pytest.raises(SweepError, match="learning_rat: not a TrainConfig setting"):
        plan_trials.plan_trials('{"learning_rat": [1]}', 2, 0, "fast")
    with pytest.raises(SweepError, match="unknown training recipe 'quick'"):
        plan_trials.plan_trials("lr-schedule", 2, 0, "quick")


def test_the_plan_wrapper_opens_one_parent_run_and_tpe_reads_earlier_trials(
    mlflow_server, experiment_name
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    spec = '{"engine": "tpe", "learning_rate": {"log_range": [0.001, 0.01]}}'
    digest = parse_space(spec).digest(resolve_recipe("fast"))
    for index in range(3):  # trials of an earlier sweep of the same space
        run = client.create_run(
            experiment_id,
            tags={SPACE_DIGEST_TAG: digest, TRIAL_STATUS_TAG: "succeeded", TRIAL_VALUE_TAG: "0.9"},
        )
        client.log_param(run.info.run_id, "learning_rate", str(0.002 + index / 1000))
        client.set_terminated(run.info.run_id)
    wrapper = plan_trials.component("digits:test").python_func
    arguments = dict(
        sweep=spec, trials=2, sweep_seed=0, recipe="fast", epochs=0, batch_size=0, seed=2,
        mlflow_tracking_uri=mlflow_server, experiment_name=experiment_name,
        mlflow_artifact_location="", run_name="", kfp_ui_url="", mlflow_timeout_s=60.0,
        pipeline_run_id="run-plan", pipeline_run_name="plan test",
    )  # fmt: skip
    plan = wrapper(**arguments)
    assert wrapper(**arguments) == plan  # a retry finds the same parent and plans the same
    (parent_id,) = {trial["parent_run_id"] for trial in plan}
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "sweep inline (tpe, 2 trials)"
    assert parent.data.params["sweep_engine"] == "tpe"
    assert parent.data.params["sweep_history_trials"] == "3"
    assert parent.data.params["sweep_seed"] == "0"
    assert parent.data.tags["digits.pipeline_run_id"] == "run-plan/cnn"
    assert parent.data.tags["kfp_run_id"] == "run-plan"
    assert {trial["experiment_id"] for trial in plan} == {experiment_id}


@pytest.fixture(scope="module")
def trials(tmp_path_factory, split_sets):
    """Two trials of GRID through train_trial's wrapper: one trains, one diverges."""
    work = tmp_path_factory.mktemp("trials")
    wrapper = train_trial.component("digits:test").python_func
    trained = []
    for trial in plan_trials.plan_trials(GRID, 2, 0, "fast", epochs=1, batch_size=32):
        out = work / trial["trial_name"]
        model = Model(name="model", uri=str(out / "model"))
        wrapper(
            train=Dataset(name="train", uri=str(split_sets[0])),
            validation=Dataset(name="validation", uri=str(split_sets[1])),
            trial_id=trial["trial_id"], overrides=trial["overrides"], recipe="fast", epochs=1,
            batch_size=32, seed=2, checkpoint_root="", checkpoint_dir=str(work / "checkpoints"),
            pipeline_run_id="run-1", model=model,
            history=Artifact(name="history", uri=str(out / "history")),
        )  # fmt: skip
        trained.append((out / "model", model.metadata))
    return trained


def test_a_trial_trains_the_recipe_with_its_values_and_checkpoints_on_its_own(trials, tmp_path):
    (model_dir, metadata), _ = trials
    record = TrialRecord.read(model_dir / TRIAL_FILENAME)
    assert record.succeeded and record.epochs_run == 1 and record.error == ""
    training = json.loads((model_dir / TRAINING_FILENAME).read_text())
    assert training["config"]["learning_rate"] == 0.003 and training["config"]["epochs"] == 1
    assert (model_dir / MODEL_FILENAME).is_file()
    assert metadata["status"] == "succeeded" and metadata["trial"] == "trial-00"
    # Its checkpoints are in its own folder under the sweep's.
    assert (model_dir.parents[1] / "checkpoints" / "trial-00" / "latest.json").is_file()


def test_a_trial_stuck_at_chance_is_stopped_after_three_epochs():
    """A dead network (measured in bench/sweep_bench.py: learning rate 9.5e-3, 11.25 % for all 14
    epochs) fails at epoch 3 instead of spending its remaining epochs; a learning one goes on."""
    from digits.errors import TrainingError
    from digits.training import STALL_EPOCHS, divergence_guard

    guard = divergence_guard()
    guard.on_epoch_end(0, {"val_accuracy": 0.1075, "loss": 2.33})  # too early to judge
    guard.on_epoch_end(STALL_EPOCHS - 1, {"val_accuracy": 0.2, "loss": 2.0})  # twice chance
    guard.on_epoch_end(STALL_EPOCHS, {"val_accuracy": 0.1125, "loss": 2.30})  # judged once only
    with pytest.raises(TrainingError, match=r"stalled: validation accuracy 11\.25% after 3 epochs"):
        guard.on_epoch_end(STALL_EPOCHS - 1, {"val_accuracy": 0.1125, "loss": 2.30})


def test_a_diverging_trial_returns_its_failure_instead_of_raising(trials):
    _, (model_dir, metadata) = trials
    record = TrialRecord.read(model_dir / TRIAL_FILENAME)
    assert record.status == "failed" and metadata["status"] == "failed"
    assert "diverged" in record.error and "lower the learning rate" in record.error
    assert "\n" not in record.error
    assert record.overrides == {"learning_rate": 1000.0}
    assert not (model_dir / MODEL_FILENAME).exists()


def test_evaluate_trial_scores_a_trained_trial_and_passes_a_failed_one_on(
    trials, split_sets, tmp_path
):
    (good, _), (bad, _) = trials
    scored = evaluate_trial.evaluate_trial(good, split_sets[1], tmp_path / "good.json")
    assert scored.succeeded and 0.0 <= scored.val_accuracy <= 1.0
    assert scored.evaluation["accuracy"] == scored.val_accuracy
    assert TrialRecord.read(tmp_path / "good.json") == scored
    failed = evaluate_trial.evaluate_trial(bad, split_sets[1], tmp_path / "bad.json")
    assert failed.status == "failed" and failed.val_accuracy is None


def test_each_trial_is_a_child_run_of_the_sweep(
    trials, split_sets, tmp_path, mlflow_server, experiment_name
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    parent = client.create_run(experiment_id).info.run_id
    wrapper = evaluate_trial.component("digits:test").python_func
    runs = []
    for index, (model_dir, _) in enumerate(trials):
        record = Artifact(name="trial", uri=str(tmp_path / f"trial-{index}"))
        wrapper(
            model=Model(name="model", uri=str(model_dir)),
            validation=Dataset(name="validation", uri=str(split_sets[1])),
            data_report=Artifact(name="report", uri=str(tmp_path / "no-report")),
            parent_run_id=parent, experiment_id=experiment_id, space_digest="abc",
            recipe="fast", mlflow_tracking_uri=mlflow_server, experiment_name=experiment_name,
            train_data_uri="train.csv", validation_fraction=0.25, split_seed=2, kfp_ui_url="",
            mlflow_timeout_s=60.0, pipeline_run_id="run-1", pipeline_run_name="sweep test",
            trial=record, metrics=Metrics(name="metrics", uri=str(tmp_path / f"m-{index}")),
        )  # fmt: skip
        runs.append(client.get_run(TrialRecord.read(Path(record.path)).mlflow_run_id))
    good, bad = runs
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags[SPACE_DIGEST_TAG] == "abc"
        assert run.data.params["recipe"] == "fast"
    assert good.info.status == "FINISHED" and good.data.tags[TRIAL_STATUS_TAG] == "succeeded"
    assert good.info.run_name == "trial-00 learning_rate=0.003"
    assert good.data.params["learning_rate"] == "0.003" and good.data.params["epochs"] == "1"
    assert float(good.data.tags[TRIAL_VALUE_TAG]) > 0
    assert {"train/loss", "val/accuracy"} <= set(good.data.metrics)
    assert bad.info.status == "FAILED" and bad.data.tags[TRIAL_STATUS_TAG] == "failed"
    assert "diverged" in bad.data.tags["trial_error"]
    assert bad.data.params["learning_rate"] == "1000.0"


def _evaluation(accuracy: float) -> dict:
    evaluation = asdict(evaluate_probabilities(np.arange(10), np.eye(10)))
    return {**evaluation, "accuracy": accuracy}


def _record(trial_id, accuracy, status="succeeded"):
    return TrialRecord(
        trial_id=trial_id,
        overrides={"zoom": trial_id / 10},
        status=status,
        error="" if status == "succeeded" else f"boom {trial_id}",
        seconds=1.5,
        val_accuracy=accuracy,
        evaluation=_evaluation(accuracy) if accuracy is not None else None,
    )


def _model_dirs(tmp_path, records):
    dirs = []
    for record in records:
        model_dir = tmp_path / f"m{record.trial_id}"
        model_dir.mkdir()
        record.write(model_dir / TRIAL_FILENAME)
        (model_dir / TRAINING_FILENAME).write_text(json.dumps({"recipe": "fast", "config": {}}))
        (model_dir / "history.json").write_text(json.dumps([{"epoch": record.trial_id}]))
        dirs.append(model_dir)
    return dirs


def test_select_best_takes_the_highest_accuracy_ties_to_the_lower_id_in_any_order(tmp_path):
    records = [_record(0, 0.9), _record(1, 0.95), _record(2, 0.95), _record(3, None, "failed")]
    shuffled = records[:]
    random.Random(4).shuffle(shuffled)
    dirs = _model_dirs(tmp_path, records)
    random.Random(5).shuffle(dirs)
    out = tmp_path / "out"
    selection = select_best.select_best(
        shuffled, dirs, out / "model", out / "history", out / "report"
    )
    assert selection.best.trial_id == 1
    assert [record.trial_id for record in selection.trials] == [0, 1, 2, 3]
    assert json.loads((out / "history").read_text()) == [{"epoch": 1}]
    assert json.loads((out / "report").read_text()) == _evaluation(0.95)
    training = json.loads((out / "model" / TRAINING_FILENAME).read_text())
    assert training["trial"]["name"] == "trial-01"
    table = selection.table.splitlines()
    assert "| trial | parameters | validation accuracy | time | status |" in table
    assert "| **trial-01** | zoom=0.1 | 0.9500 | 1.5 s | best |" in table
    assert "| trial-03 | zoom=0.3 | – | 1.5 s | failed: boom 3 |" in table


def test_the_sweep_fails_in_one_line_only_when_every_trial_failed(tmp_path):
    records = [_record(0, None, "failed"), _record(1, None, "failed")]
    with pytest.raises(SweepError) as raised:
        select_best.select_best(
            records, _model_dirs(tmp_path, records), tmp_path / "m", tmp_path / "h", tmp_path / "r"
        )
    message = str(raised.value)
    assert "\n" not in message
    assert "every one of the 2 trials failed" in message
    assert "trial-00: boom 0; trial-01: boom 1" in message


def test_the_select_best_wrapper_records_the_winner_on_the_parent(
    tmp_path, mlflow_server, experiment_name
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    parent = client.create_run(experiment_id).info.run_id
    child = client.create_run(experiment_id).info.run_id
    records = [_record(0, 0.5), _record(1, 0.75)]
    records[1].mlflow_run_id = child
    for record in records:
        record.parent_run_id = parent
    dirs = _model_dirs(tmp_path, records)
    trial_artifacts = []
    for record in records:
        record.write(tmp_path / f"record-{record.trial_id}")
        trial_artifacts.append(
            Artifact(name="trial", uri=str(tmp_path / f"record-{record.trial_id}"))
        )
    outputs = {
        name: kind(name=name, uri=str(tmp_path / "out" / name))
        for name, kind in (
            ("model", Model), ("history", Artifact), ("report", Artifact),
            ("metrics", Metrics), ("table", Markdown),
        )
    }  # fmt: skip
    (tmp_path / "out").mkdir()
    best = select_best.component("digits:test").python_func(
        trials=trial_artifacts,
        models=[Model(name="model", uri=str(path)) for path in dirs],
        mlflow_tracking_uri=mlflow_server,
        experiment_name=experiment_name,
        mlflow_timeout_s=60.0,
        pipeline_run_id="run-1",
        **outputs,
    )
    assert best == ("trial-01", child)
    assert outputs["metrics"].metadata["trial_id"] == 1
    assert "**trial-01**" in Path(outputs["table"].path).read_text()
    tags = client.get_run(parent).data.tags
    assert (tags["best_trial"], tags["best_trial_run_id"]) == ("trial-01", child)
    assert client.get_run(parent).data.metrics["sweep/best_val_accuracy"] == 0.75
    assert client.get_run(child).data.tags["sweep_best"] == "true"
    artifacts = {a.path for a in client.list_artifacts(parent, "sweep")}
    assert artifacts == {"sweep/trials.md", "sweep/trials.json"}
