"""Step 7: champion/challenger gate: the new version takes alias `champion` only if it wins.

Both models are scored side by side on this run's validation rows (the current champion is
re-scored; numbers from different splits are never compared). The new version wins when its
accuracy is at least the champion's plus ``promotion_margin`` and no digit's recall drops by
more than ``max_recall_drop``: one scalar can hide a class that got worse. Gates that finish at
once take turns under a lock (see :mod:`digits.promotion`).
"""

from pathlib import Path

from digits.promotion import PromotionDecision


def promote_model(
    evaluation_path: Path,
    validation_path: Path,
    tracking_uri: str,
    model_name: str,
    candidate_version: str,
    promotion_margin: float = 0.0,
    max_recall_drop: float = 0.005,
    timeout_s: float = 300,
    lease_s: float = 120,
) -> PromotionDecision:
    """Give ``candidate_version`` alias champion or challenger; record why on the version.

    ``evaluation_path`` holds the candidate's scores on ``validation_path`` (the evaluate step's
    report); the current champion is scored here on the same rows.
    """
    from digits.promotion import GateInputs, run_gate
    from digits.registry import registry_client
    from digits.tracking import Budget, KfpMlflowPlugin, tracking_session

    plugin = KfpMlflowPlugin.from_environment()
    tracking_uri = plugin.endpoint if plugin else tracking_uri
    budget = Budget(timeout_s)
    gate = GateInputs(
        evaluation_path,
        validation_path,
        model_name,
        candidate_version,
        promotion_margin,
        max_recall_drop,
    )
    with tracking_session(tracking_uri, budget):
        return run_gate(registry_client(tracking_uri), budget, gate, lease_s)


def component(image: str):
    """Build the KFP component that runs :func:`promote_model` in ``image``."""
    from typing import NamedTuple

    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def promote_model(
        evaluation: Input[Artifact],
        validation: Input[Dataset],
        mlflow_tracking_uri: str,
        registered_model_name: str,
        model_version: str,
        mlflow_run_id: str,
        mlflow_experiment_id: str,
        promotion_margin: float,
        max_recall_drop: float,
        mlflow_timeout_s: float,
        decision_report: Output[Markdown],
    ) -> NamedTuple("Outputs", decision=str, champion_version=str):
        """Champion/challenger gate on this run's validation rows; the decision as Markdown."""
        from collections import namedtuple
        from pathlib import Path

        from digits.components.promote_model import promote_model as run
        from digits.tracking import mlflow_run_url

        decision = run(
            Path(evaluation.path),
            Path(validation.path),
            tracking_uri=mlflow_tracking_uri,
            model_name=registered_model_name,
            candidate_version=model_version,
            promotion_margin=promotion_margin,
            max_recall_drop=max_recall_drop,
            timeout_s=mlflow_timeout_s,
        )
        link = mlflow_run_url(mlflow_tracking_uri, mlflow_experiment_id, mlflow_run_id)
        Path(decision_report.path).write_text(decision.markdown(link))
        decision_report.metadata.update({"decision": decision.alias, "reason": decision.reason})
        outputs = namedtuple("Outputs", ["decision", "champion_version"])
        return outputs(decision.alias, decision.champion_version)

    return promote_model
