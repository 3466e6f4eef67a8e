"""Step 8a: the shard indices that batch prediction fans out over (dsl.ParallelFor)."""

from digits.errors import PredictionError


def plan_prediction_shards(shard_count: int) -> list[int]:
    """``[0, 1, ..., shard_count - 1]``; each index scores one contiguous slice of the rows."""
    if shard_count < 1:
        raise PredictionError(f"predict_shards={shard_count}: expected 1 or more shards")
    return list(range(shard_count))


def component(image: str):
    """Build the KFP component that runs :func:`plan_prediction_shards` in ``image``."""
    from typing import List  # noqa: UP035  (KFP reads typing.List, not list[int])

    from kfp import dsl

    @dsl.component(base_image=image, install_kfp_package=False)
    def plan_prediction_shards(shard_count: int) -> List[int]:  # noqa: UP006
        """One index per prediction shard."""
        from digits.components.plan_prediction_shards import plan_prediction_shards as run

        return run(shard_count)

    return plan_prediction_shards
