"""Sweep step 4: pick the best trial on the validation split; hand its model on to registration.

The trials arrive through ``dsl.Collected`` in no guaranteed order, so each trial's model and
record are matched by the trial id written inside them, and a tie in validation accuracy goes
to the lower trial id. The winner's model, history and evaluation are copied to this step's
outputs, so registration and the promotion gate take them exactly as they take a single
training's. The sweep fails (one line) only when every trial failed.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from digits.artifacts import TRAINING_FILENAME
from digits.errors import SweepError
from digits.sweep import TRIAL_FILENAME, TRIAL_HISTORY_FILENAME, TrialRecord
from digits.sweep_tracking import SweepTarget


@dataclass(frozen=True)
class Selection:
    best: TrialRecord
    trials: list[TrialRecord]  # by trial id
    table: str  # Markdown


def select_best(
    records: list[TrialRecord],
    model_dirs: list[Path],
    model_dir: Path,
    history_path: Path,
    report_path: Path,
    target: SweepTarget | None = None,
    parent_run_id: str = "",
) -> Selection:
    """The trial with the highest validation accuracy (ties: the lower trial id), its model,
    history and evaluation copied to ``model_dir``, ``history_path`` and ``report_path``.

    With a ``target`` and the sweep's ``parent_run_id``, the parent run records the best trial
    and the table of trials (and ends FAILED when every trial failed).

    Raises:
        SweepError: every trial failed (the line says why each did), or a trial's model is
            missing.
    """
    trials = sorted(records, key=lambda record: record.trial_id)
    succeeded = [record for record in trials if record.succeeded]
    tracker = None
    if target is not None and parent_run_id:
        from digits.sweep_tracking import SweepTracker

        tracker = SweepTracker(target)
    if not succeeded:
        reasons = "; ".join(f"{record.name}: {record.error}" for record in trials)
        message = (
            f"every one of the {len(trials)} trials failed ({reasons}); fix the search space "
            "(sweep) or the recipe, e.g. a lower learning rate"
        )
        if tracker is not None:
            with tracker.session():
                tracker.fail(parent_run_id, message)
        raise SweepError(message)
    best = max(succeeded, key=lambda record: (record.val_accuracy, -record.trial_id))
    table = trials_table(trials, best)
    winner_dir = _model_dir_of(best.trial_id, model_dirs)
    shutil.copytree(winner_dir, model_dir, dirs_exist_ok=True)
    shutil.copyfile(winner_dir / TRIAL_HISTORY_FILENAME, history_path)
    report_path.write_text(json.dumps(best.evaluation, indent=2))
    # Registration reads the trial from training.json: the winner's child run links to the
    # version registered from it.
    training = json.loads((model_dir / TRAINING_FILENAME).read_text())
    training["trial"] = {
        "name": best.name,
        "overrides": best.overrides,
        "mlflow_run_id": best.mlflow_run_id,
    }
    (model_dir / TRAINING_FILENAME).write_text(json.dumps(training, indent=2))
    if tracker is not None:
        with tracker.session():
            tracker.record_selection(parent_run_id, trials, best, table)
    return Selection(best, trials, table)


def trials_table(trials: list[TrialRecord], best: TrialRecord) -> str:
    """The trials as a Markdown table: parameters, validation accuracy, time, status."""
    lines = [
        f"# Sweep: {best.name} is best, validation accuracy {best.val_accuracy:.4f}",
        "",
        "| trial | parameters | validation accuracy | time | status |",
        "|---|---|---|---|---|",
    ]
    for record in trials:
        parameters = ", ".join(f"{key}={value}" for key, value in sorted(record.overrides.items()))
        accuracy = f"{record.val_accuracy:.4f}" if record.val_accuracy is not None else "–"
        status = "best" if record is best else record.status
        if not record.succeeded:
            status = f"failed: {record.error}".replace("|", "\\|")
        name = f"**{record.name}**" if record is best else record.name
        lines.append(
            f"| {name} | {parameters or '(recipe as is)'} | {accuracy} | "
            f"{record.seconds:.1f} s | {status} |"
        )
    failed = sum(not record.succeeded for record in trials)
    lines += ["", f"{len(trials)} trials, {failed} failed; ties go to the lower trial id."]
    return "\n".join(lines) + "\n"


def _model_dir_of(trial_id: int, model_dirs: list[Path]) -> Path:
    for directory in model_dirs:
        path = Path(directory) / TRIAL_FILENAME
        if path.is_file() and TrialRecord.read(path).trial_id == trial_id:
            return Path(directory)
    raise SweepError(f"trial {trial_id}: no model among the {len(model_dirs)} collected ones")


def component(image: str):
    """Build the KFP component that runs :func:`select_best` in ``image``."""
    from typing import List, NamedTuple  # noqa: UP035  (KFP reads typing.List)

    from kfp import dsl
    from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def select_best(
        trials: Input[List[Artifact]],  # noqa: UP006
        models: Input[List[Model]],  # noqa: UP006
        mlflow_tracking_uri: str,
        experiment_name: str,
        mlflow_timeout_s: float,
        pipeline_run_id: str,
        model: Output[Model],
        history: Output[Artifact],
        report: Output[Artifact],
        metrics: Output[Metrics],
        table: Output[Markdown],
    ) -> NamedTuple("Outputs", best_trial=str, best_trial_run_id=str):
        """The best trial on validation accuracy (ties: lower id), as the model to register."""
        from collections import namedtuple
        from pathlib import Path

        from digits.artifacts import Evaluation
        from digits.components.select_best import select_best as run
        from digits.sweep import TrialRecord
        from digits.sweep_tracking import SweepTarget

        records = [TrialRecord.read(Path(trial.path)) for trial in trials]
        parents = {record.parent_run_id for record in records if record.parent_run_id}
        selection = run(
            records,
            [Path(trial_model.path) for trial_model in models],
            Path(model.path),
            Path(history.path),
            Path(report.path),
            target=SweepTarget(
                tracking_uri=mlflow_tracking_uri,
                experiment_name=experiment_name,
                pipeline_run_id=pipeline_run_id,
                timeout_s=mlflow_timeout_s,
            ),
            parent_run_id=next(iter(parents), ""),
        )
        best = selection.best
        Path(table.path).write_text(selection.table)
        for name, value in Evaluation(**best.evaluation).scalar_metrics().items():
            metrics.log_metric(name, value)
        metrics.log_metric("trial_id", best.trial_id)
        model.metadata.update({"trial": best.name, "framework": "keras"})
        outputs = namedtuple("Outputs", ["best_trial", "best_trial_run_id"])
        return outputs(best.name, best.mlflow_run_id)

    return select_best
