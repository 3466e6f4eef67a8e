"""Sweep step 1: plan every trial of a sweep up front, and open the sweep's MLflow run.

The plan is the list the trial loop (dsl.ParallelFor) fans out over; each item carries all a
trial takes from upstream steps (see :class:`digits.sweep.TrialPlan`). Engines and spaces live
in :mod:`digits.sweep`; with engine ``tpe`` the finished trials of earlier sweeps of the same
space in the MLflow experiment are what TPE learns from.
"""

import json
from collections.abc import Iterable

from digits.config import resolve_recipe
from digits.errors import RecipeError, SweepError
from digits.sweep import FinishedTrial, TrialPlan, check_sweep, plan
from digits.sweep_tracking import SweepTarget


def plan_trials(
    sweep: str,
    trials: int,
    sweep_seed: int,
    recipe: str,
    epochs: int = 0,
    batch_size: int = 0,
    seed: int = 2,
    target: SweepTarget | None = None,
    history: Iterable[FinishedTrial] | None = None,
) -> list[TrialPlan]:
    """The sweep's trials over the recipe (with the user's epochs, batch size and seed).

    With a ``target``, the sweep's parent run is created (or found again) in MLflow, and the
    engine ``tpe`` reads its history there; without one, ``history`` (default none) is used and
    nothing is logged.

    Raises:
        SweepError: the spec, the trial count or a planned trial's recipe is unusable (one line,
            before any trial runs).
    """
    space = check_sweep(sweep, trials)
    try:
        base = resolve_recipe(recipe, epochs=epochs, batch_size=batch_size, seed=seed)
    except RecipeError as error:
        raise SweepError(f"recipe {recipe!r}: {error}") from error
    digest = space.digest(base)
    parent_run_id = experiment_id = ""
    if target is not None:
        from digits.sweep_tracking import SweepTracker

        tracker = SweepTracker(target)
        with tracker.session():
            experiment_id = tracker.experiment()
            if space.engine == "tpe" and history is None:
                history = tracker.finished_trials(experiment_id, space, digest)
            planned = _plan(space, trials, sweep_seed, history, recipe, epochs, batch_size, seed)
            parent_run_id = tracker.start_parent(
                experiment_id,
                space,
                {
                    "sweep_space": space.name,
                    "sweep_engine": space.engine,
                    "sweep_trials": len(planned),
                    "sweep_seed": sweep_seed,
                    "sweep_spec": json.dumps(space.spec(), sort_keys=True),
                    "sweep_space_digest": digest,
                    "sweep_history_trials": len(list(history or ())),
                },
            )
    else:
        planned = _plan(space, trials, sweep_seed, history, recipe, epochs, batch_size, seed)
    return [
        TrialPlan(
            trial_id=trial.trial_id,
            trial_name=trial.name,
            overrides=json.dumps(trial.overrides, sort_keys=True),
            parent_run_id=parent_run_id,
            experiment_id=experiment_id,
            space_digest=digest,
        )
        for trial in planned
    ]


def _plan(space, trials, sweep_seed, history, recipe, epochs, batch_size, seed):
    planned = plan(space, trials, sweep_seed, list(history or ()))
    for trial in planned:  # every trial's recipe is valid before any trial runs
        try:
            resolve_recipe(
                recipe, epochs=epochs, batch_size=batch_size, seed=seed, overrides=trial.overrides
            )
        except RecipeError as error:
            raise SweepError(f"{trial.label()}: {error}") from error
    return planned


def component(image: str):
    """Build the KFP component that runs :func:`plan_trials` in ``image``."""
    from typing import Dict, List  # noqa: UP035  (KFP reads typing.List, not list[dict])

    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def plan_trials(
        sweep: str,
        trials: int,
        sweep_seed: int,
        recipe: str,
        epochs: int,
        batch_size: int,
        seed: int,
        mlflow_tracking_uri: str,
        experiment_name: str,
        mlflow_artifact_location: str,
        run_name: str,
        kfp_ui_url: str,
        mlflow_timeout_s: float,
        pipeline_run_id: str,
        pipeline_run_name: str,
        schedule_name: str = "",
        pipeline_version: str = "",
        scheduled_at: str = "",
    ) -> List[Dict]:  # noqa: UP006
        """The sweep's trials, fixed up front from the seed; opens the sweep's MLflow run."""
        from digits.components.plan_trials import plan_trials as run
        from digits.sweep_tracking import SweepTarget
        from digits.tracking import schedule_tags

        target = SweepTarget(
            tracking_uri=mlflow_tracking_uri,
            experiment_name=experiment_name,
            pipeline_run_id=pipeline_run_id,
            pipeline_run_name=pipeline_run_name,
            artifact_location=mlflow_artifact_location,
            run_name=run_name,
            kfp_ui_url=kfp_ui_url,
            schedule_tags=schedule_tags(schedule_name, pipeline_version, scheduled_at),
            timeout_s=mlflow_timeout_s,
        )
        planned = run(sweep, trials, sweep_seed, recipe, epochs, batch_size, seed, target)
        for trial in planned:
            print(f"{trial['trial_name']} {trial['overrides']}", flush=True)
        return [dict(trial) for trial in planned]

    return plan_trials
