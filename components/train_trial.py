"""Sweep step 2: train one trial, the recipe resolved with the trial's values; always returns.

A failing trial must not fail the sweep: kfp.local stops at the first failed loop iteration,
and on a cluster a failed iteration fails the loop. So an error inside training (a diverged
loss, a value the code refuses at run time) is caught and recorded in ``trial.json`` (status
``failed`` and the one-line reason) and the step succeeds; the evaluation step, the sweep's
table and MLflow then show the failure. What kills the pod (a preemption, out of memory) is not
caught: the pipeline retries the task, which resumes from the trial's own checkpoint.
"""

import shutil
import time
import traceback
from pathlib import Path

from digits.config import resolve_recipe
from digits.sweep import TRIAL_FILENAME, TRIAL_HISTORY_FILENAME, TrialRecord, trial_name


def train_trial(
    train_path: Path,
    validation_path: Path,
    model_dir: Path,
    history_path: Path,
    trial_id: int,
    overrides: dict,
    recipe: str,
    epochs: int = 0,
    batch_size: int = 0,
    seed: int = 2,
    checkpoint_uri: str = "",
) -> TrialRecord:
    """Fit the CNN for one trial; ``model_dir`` holds the model (when it trained), its
    ``training.json``, ``history.json`` and ``trial.json`` (the :class:`TrialRecord`).

    ``checkpoint_uri`` is the sweep's checkpoint location; the trial checkpoints in its own
    subfolder of it (``trial-03``), so a retried trial resumes its own epochs.
    """
    from digits.training import divergence_guard, train_model

    record = TrialRecord(trial_id=trial_id, overrides=overrides)
    started = time.perf_counter()
    try:
        config = resolve_recipe(
            recipe, epochs=epochs, batch_size=batch_size, seed=seed, overrides=overrides
        )
        result = train_model(
            train_path,
            validation_path,
            model_dir,
            history_path,
            config,
            recipe=recipe,
            checkpoint_uri=f"{checkpoint_uri.rstrip('/')}/{trial_name(trial_id)}"
            if checkpoint_uri
            else "",
            observers=[divergence_guard()],
        )
        record.seconds, record.epochs_run = result.seconds, result.epochs_run
    except Exception as error:  # any error of one trial is that trial's failure
        traceback.print_exc()
        record.fail(error)
        record.seconds = round(time.perf_counter() - started, 2)
        print(f"{trial_name(trial_id)} failed: {record.error}", flush=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not history_path.exists():
        history_path.write_text("[]")
    shutil.copyfile(history_path, model_dir / TRIAL_HISTORY_FILENAME)
    record.write(model_dir / TRIAL_FILENAME)
    return record


def component(image: str):
    """Build the KFP component that runs :func:`train_trial` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_trial(
        train: Input[Dataset],
        validation: Input[Dataset],
        trial_id: int,
        overrides: str,
        recipe: str,
        epochs: int,
        batch_size: int,
        seed: int,
        checkpoint_root: str,
        checkpoint_dir: str,
        pipeline_run_id: str,
        model: Output[Model],
        history: Output[Artifact],
    ):
        """Fit one trial of the sweep; a failure is recorded in trial.json, never raised."""
        import json
        from pathlib import Path

        from digits.checkpoint import checkpoint_location
        from digits.components.train_trial import train_trial as run

        record = run(
            Path(train.path),
            Path(validation.path),
            Path(model.path),
            Path(history.path),
            trial_id,
            json.loads(overrides),
            recipe,
            epochs,
            batch_size,
            seed,
            checkpoint_location(checkpoint_dir, checkpoint_root, pipeline_run_id),
        )
        model.metadata.update(
            {
                "trial": record.name,
                "status": record.status,
                "error": record.error,
                "seconds": record.seconds,
                "recipe": recipe,
                "framework": "keras",
            }
        )

    return train_trial
