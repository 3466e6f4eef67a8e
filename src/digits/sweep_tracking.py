"""A sweep in MLflow: one parent run per sweep, one child run per trial, the best one recorded.

Trials run in their own pods, so nesting is by the ``mlflow.parentRunId`` tag: the plan step
creates the parent and hands its id to every trial, whose child run carries the tag from its
creation. The parent is keyed as this pipeline run's CNN run (:class:`~digits.run_logging.
RunLogger`'s key), so the winner's registration logs its model, curves and evaluation into the
parent, and the promotion gate and the predictions tag it, exactly as for a single training.
Each child is logged by :class:`~digits.run_logging.RunLogger` too (params, curves, evaluation,
pictures, its own logged model); a failed trial's child holds its params and the error, and
ends FAILED. A retried step finds every run it created by its key
(:func:`digits.tracking.create_once`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digits.sweep import FinishedTrial, SearchSpace, TrialRecord, trial_label
from digits.tracking import MODEL_FAMILY_TAG, PIPELINE_RUN_TAG

SWEEP_TAG = "digits.sweep"  # "parent" on the sweep's run, the trial's name on a child
PARENT_TAG = "mlflow.parentRunId"
SPACE_DIGEST_TAG = "sweep_space_digest"
TRIAL_STATUS_TAG = "trial_status"
# The value TPE is told for a finished trial (its validation accuracy), read back by later sweeps.
TRIAL_VALUE_TAG = "trial_val_accuracy"
TRIALS_TABLE_ARTIFACT = "sweep/trials.md"
TRIALS_JSON_ARTIFACT = "sweep/trials.json"


@dataclass(frozen=True)
class SweepTarget:
    """Where and as what a sweep is logged: the MLflow server and this pipeline run."""

    tracking_uri: str
    experiment_name: str
    pipeline_run_id: str
    pipeline_run_name: str = ""
    artifact_location: str = ""
    run_name: str = ""
    kfp_ui_url: str = ""
    schedule_tags: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 300.0


@dataclass(frozen=True)
class SweepRun:
    """The sweep's run, as each trial gets it from the plan."""

    experiment_id: str
    parent_run_id: str  # "" when the sweep is not logged under a parent
    space_digest: str


def sweep_run_key(pipeline_run_id: str) -> str:
    """The parent's key: the one RunLogger finds as this pipeline run's CNN run."""
    return f"{pipeline_run_id}/cnn"


def trial_run_key(pipeline_run_id: str, trial_name: str) -> str:
    return f"{sweep_run_key(pipeline_run_id)}/{trial_name}"


class SweepTracker:
    """The MLflow side of one sweep; every call retried within one time budget."""

    def __init__(self, target: SweepTarget):
        from digits.registry import registry_client
        from digits.tracking import Budget, KfpMlflowPlugin

        self.target = target
        self.plugin = KfpMlflowPlugin.from_environment()
        self.tracking_uri = self.plugin.endpoint if self.plugin else target.tracking_uri
        self.budget = Budget(target.timeout_s)
        self.client = registry_client(self.tracking_uri)

    def session(self):
        """The context every call runs in (the client's own retries off, see digits.tracking)."""
        from digits.tracking import tracking_session

        return tracking_session(self.tracking_uri, self.budget)

    def experiment(self) -> str:
        from digits.tracking import experiment_once

        if self.plugin is not None:
            return self.plugin.experiment_id
        target = self.target
        return experiment_once(
            self.client, self.budget, target.experiment_name, target.artifact_location
        )

    def start_parent(self, experiment_id: str, space: SearchSpace, params: dict) -> str:
        """The sweep's run (KFP's MLflow plugin's parent run when the plugin is on)."""
        from mlflow.entities import Param

        from digits.tracking import retry

        target = self.target
        tags = {**self._tags(sweep_run_key(target.pipeline_run_id)), SWEEP_TAG: "parent"}
        tags["sweep_space"] = space.name
        if self.plugin is not None:
            run_id = self.plugin.parent_run_id
            retry(self.budget, lambda: self._set_tags(run_id, tags))
        else:
            name = target.run_name or (
                f"sweep {space.name} ({space.engine}, {params['sweep_trials']} trials)"
            )
            run_id = self._create_run(experiment_id, tags, name, _now_ms())
        retry(
            self.budget,
            lambda: self.client.log_batch(
                run_id, params=[Param(key, str(value)[:6000]) for key, value in params.items()]
            ),
        )
        return run_id

    def finished_trials(self, experiment_id: str, space: SearchSpace, digest: str):
        """Finished trials of earlier sweeps of the same space over the same base recipe,
        oldest first (what TPE is told); trials outside the space are left out."""
        from mlflow.entities import ViewType

        from digits.tracking import retry

        query = (
            f"tags.`{SPACE_DIGEST_TAG}` = '{digest}' and tags.`{TRIAL_STATUS_TAG}` = 'succeeded'"
            " and attributes.status = 'FINISHED'"
        )
        runs = retry(
            self.budget,
            lambda: self.client.search_runs(
                [experiment_id],
                query,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=5000,
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            ),
        )
        history = []
        for run in runs:
            values = space.typed(run.data.params)
            value = run.data.tags.get(TRIAL_VALUE_TAG)
            if values is not None and value is not None:
                history.append(FinishedTrial(values, float(value)))
        return history

    def log_trial(
        self,
        sweep: SweepRun,
        record: TrialRecord,
        model_dir: Path,
        history_path: Path,
        validation_path: Path,
        data_report_path: Path | None,
        data_params: dict,
        train_data_uri: str,
        recipe: str,
        config: dict | None,
    ) -> str:
        """The trial's child run: everything a single training's run holds, or (failed) its
        params and error; returns its id."""
        from digits.run_logging import RunLogger, RunRecord

        experiment_id, parent = sweep.experiment_id, sweep.parent_run_id
        tags = {
            **self._tags(trial_run_key(self.target.pipeline_run_id, record.name)),
            SWEEP_TAG: record.name,
            SPACE_DIGEST_TAG: sweep.space_digest,
            "sweep_trial": record.name,
            TRIAL_STATUS_TAG: record.status,
        }
        if parent:
            tags[PARENT_TAG] = parent
        label = trial_label(record.trial_id, record.overrides)
        if not record.succeeded:
            return self._log_failed_trial(
                experiment_id, tags, label, record, recipe, config, data_params
            )
        training = json.loads((model_dir / "training.json").read_text())
        run_id = self._create_run(
            experiment_id, tags, label, training["result"].get("started_at_ms")
        )
        with tempfile.TemporaryDirectory() as scratch:
            evaluation_path = Path(scratch) / "evaluation.json"
            evaluation_path.write_text(json.dumps(record.evaluation))
            run_record = RunRecord(
                model_dir=model_dir,
                history_path=history_path,
                evaluation_path=evaluation_path,
                validation_path=validation_path,
                pipeline_run_id=self.target.pipeline_run_id,
                pipeline_run_name=self.target.pipeline_run_name,
                run_name=label,
                train_data_uri=train_data_uri,
                data_report_path=data_report_path,
                data_params=data_params,
                kfp_ui_url=self.target.kfp_ui_url,
                schedule_tags=self.target.schedule_tags,
            )
            logger = RunLogger(self.client, self.budget, run_record, training)
            logger.log_everything(run_id, experiment_id)
        self._tag(run_id, {TRIAL_VALUE_TAG: str(record.val_accuracy)})
        logger.finish(run_id)
        return run_id

    def record_selection(
        self, parent_run_id: str, records: list[TrialRecord], best: TrialRecord, table: str
    ) -> None:
        """On the parent: the best trial (tags), the trial counts and the table of trials; on
        the winner's child: tag ``sweep_best``."""
        from mlflow.entities import Metric

        from digits.tracking import retry

        failed = sum(not record.succeeded for record in records)
        self._tag(
            parent_run_id,
            {
                "best_trial": best.name,
                "best_trial_run_id": best.mlflow_run_id,
                "best_trial_params": json.dumps(best.overrides, sort_keys=True),
            },
        )
        now = _now_ms()
        metrics = [
            Metric("sweep/trials_succeeded", len(records) - failed, now, 0),
            Metric("sweep/trials_failed", failed, now, 0),
            Metric("sweep/best_val_accuracy", best.val_accuracy, now, 0),
        ]
        retry(self.budget, lambda: self.client.log_batch(parent_run_id, metrics=metrics))
        client = self.client
        retry(self.budget, lambda: client.log_text(parent_run_id, table, TRIALS_TABLE_ARTIFACT))
        rows = [{**asdict(record), "evaluation": None} for record in records]
        retry(self.budget, lambda: client.log_dict(parent_run_id, rows, TRIALS_JSON_ARTIFACT))
        if best.mlflow_run_id:
            self._tag(best.mlflow_run_id, {"sweep_best": "true"})

    def fail(self, parent_run_id: str, message: str) -> None:
        """Every trial failed: the parent says why and ends FAILED."""
        from digits.tracking import retry

        self._tag(parent_run_id, {"sweep_error": message[:5000]})
        if self.plugin is None or parent_run_id != self.plugin.parent_run_id:
            retry(self.budget, lambda: self.client.set_terminated(parent_run_id, "FAILED"))

    # -- helpers --------------------------------------------------------------------------------

    def _tags(self, key: str) -> dict:
        from digits.tracking import readable_tags

        target = self.target
        return {
            PIPELINE_RUN_TAG: key,
            MODEL_FAMILY_TAG: "cnn",
            **readable_tags(target.pipeline_run_id, target.pipeline_run_name, target.kfp_ui_url),
            **target.schedule_tags,
        }

    def _create_run(self, experiment_id: str, tags: dict, name: str, start_ms) -> str:
        from digits.tracking import run_once

        return run_once(self.client, self.budget, experiment_id, tags, name, start_ms)

    def _set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def _tag(self, run_id: str, tags: dict) -> None:
        from digits.tracking import retry

        retry(self.budget, lambda: self._set_tags(run_id, tags))

    def _log_failed_trial(self, experiment_id, tags, label, record, recipe, config, data_params):
        from mlflow.entities import Param

        from digits.tracking import retry

        start = _now_ms() - int(1000 * record.seconds)
        run_id = self._create_run(experiment_id, tags, label, start)
        params = {"recipe": recipe, **(config or record.overrides), **data_params}
        retry(
            self.budget,
            lambda: self.client.log_batch(
                run_id, params=[Param(key, str(value)[:6000]) for key, value in params.items()]
            ),
        )
        self._tag(run_id, {"trial_error": record.error[:5000], "recipe": recipe})
        retry(self.budget, lambda: self.client.set_terminated(run_id, "FAILED"))
        return run_id


def link_version(client, budget, trial_run_id: str, model_name: str, version: str) -> None:
    """The sweep winner's child run names the version registered from it, and the version the
    child run (tag ``sweep_trial_run_id``)."""
    from mlflow.entities import RunTag

    from digits.tracking import retry

    tag = RunTag("registered_model_version", f"{model_name}/{version}")
    retry(budget, lambda: client.log_batch(trial_run_id, tags=[tag]))
    retry(
        budget,
        lambda: client.set_model_version_tag(
            model_name, version, "sweep_trial_run_id", trial_run_id
        ),
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
