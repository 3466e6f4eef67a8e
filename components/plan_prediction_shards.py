"""Step 8a: the shards that batch prediction fans out over (dsl.ParallelFor), each pinned.

Every shard's plan carries the model version and the MLflow run it works for, so the loop body
takes nothing from upstream tasks but its plan. That is also what kfp.local (2.17.3) needs:
it replaces every upstream task *output* parameter passed into a ParallelFor body with the loop
item (``create_parameter_loop_iteration_task_spec``), so a shard would get its index as the
champion version and as the MLflow run id.
"""

from typing import TypedDict

from digits.errors import PredictionError


class ShardPlan(TypedDict):
    shard_index: int
    champion_version: str  # "" when no gate ran
    mlflow_run_id: str  # "" when no MLflow run is to be tagged


def plan_prediction_shards(
    shard_count: int, champion_version: str = "", mlflow_run_id: str = ""
) -> list[ShardPlan]:
    """One plan per shard; shard ``i`` scores the ``i``-th contiguous slice of the rows."""
    if shard_count < 1:
        raise PredictionError(f"predict_shards={shard_count}: expected 1 or more shards")
    return [
        ShardPlan(shard_index=index, champion_version=champion_version, mlflow_run_id=mlflow_run_id)
        for index in range(shard_count)
    ]


def component(image: str):
    """Build the KFP component that runs :func:`plan_prediction_shards` in ``image``."""
    from typing import Dict, List  # noqa: UP035  (KFP reads typing.List, not list[dict])

    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def plan_prediction_shards(
        shard_count: int, champion_version: str = "", mlflow_run_id: str = ""
    ) -> List[Dict]:  # noqa: UP006
        """One plan per prediction shard: its index, the model version and the MLflow run."""
        from digits.components.plan_prediction_shards import plan_prediction_shards as run

        return [dict(plan) for plan in run(shard_count, champion_version, mlflow_run_id)]

    return plan_prediction_shards
