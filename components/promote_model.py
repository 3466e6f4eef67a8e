"""Step 7: champion/challenger gate: the new version takes alias `champion` only if it wins.

Both models are scored side by side on this run's validation rows (the current champion is
re-scored; numbers from different splits are never compared). The new version wins when its
accuracy is at least the champion's plus ``promotion_margin`` and no digit's recall drops by
more than ``max_recall_drop``: one scalar can hide a class that got worse.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHAMPION, CHALLENGER = "champion", "challenger"
# The whole decision as JSON on the version: a retried task re-applies it instead of re-deciding.
DECISION_TAG = "digits.promotion"


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate decided for one candidate version, and the figures it decided on."""

    model_name: str
    candidate_version: str
    alias: str  # CHAMPION or CHALLENGER: the alias the candidate got
    reason: str
    champion_version: str  # the champion after the decision
    compared_with: str = ""  # the champion the candidate was scored against ("" for the first)
    candidate_accuracy: float | None = None
    champion_accuracy: float | None = None
    recall_deltas: dict[str, float] = field(default_factory=dict)  # candidate - champion
    validation_rows: int = 0
    promotion_margin: float = 0.0
    max_recall_drop: float = 0.005

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    def tags(self) -> dict[str, str]:
        """Model-version tags a person reads in the registry."""
        tags = {
            "promotion.decision": self.alias,
            "promotion.reason": self.reason,
            "promotion.compared_with": self.compared_with or "none",
            "promotion.validation_rows": str(self.validation_rows),
        }
        if self.candidate_accuracy is not None:
            tags["promotion.candidate_accuracy"] = f"{self.candidate_accuracy:.6f}"
        if self.champion_accuracy is not None:
            tags["promotion.champion_accuracy"] = f"{self.champion_accuracy:.6f}"
        for digit, delta in self.recall_deltas.items():
            tags[f"promotion.recall_delta_{digit}"] = f"{delta:+.6f}"
        return tags

    def markdown(self, mlflow_run_url: str | None = None) -> str:
        """The decision for the KFP UI."""
        verdict = "promoted to `champion`" if self.promoted else "kept as `challenger`"
        lines = [
            f"# {self.model_name} v{self.candidate_version}: {verdict}",
            "",
            self.reason,
            "",
            f"Rules: accuracy >= champion + {self.promotion_margin:g}, and no digit's recall "
            f"drops by more than {self.max_recall_drop:g}; scored side by side on this run's "
            f"{self.validation_rows} validation rows.",
        ]
        if self.compared_with:
            lines += [
                "",
                f"| | v{self.candidate_version} (candidate) | v{self.compared_with} (champion) |",
                "|---|---|---|",
                f"| accuracy | {self.candidate_accuracy:.4f} | {self.champion_accuracy:.4f} |",
                "",
                "| digit | " + " | ".join(self.recall_deltas) + " |",
                "|---" * (len(self.recall_deltas) + 1) + "|",
                "| recall change | "
                + " | ".join(f"{delta:+.4f}" for delta in self.recall_deltas.values())
                + " |",
            ]
        if mlflow_run_url:
            lines += ["", f"MLflow run: [{mlflow_run_url}]({mlflow_run_url})"]
        return "\n".join(lines) + "\n"


def decide(
    candidate_accuracy: float,
    candidate_recall: list[float],
    champion_accuracy: float,
    champion_recall: list[float],
    promotion_margin: float,
    max_recall_drop: float,
) -> tuple[bool, str, dict[str, float]]:
    """(promote?, reason, per-digit recall change) from side-by-side scores on one split."""
    deltas = {
        str(digit): round(new - old, 6)
        for digit, (new, old) in enumerate(zip(candidate_recall, champion_recall, strict=True))
    }
    needed = champion_accuracy + promotion_margin
    if candidate_accuracy < needed:
        return (
            False,
            f"accuracy {candidate_accuracy:.4f} < champion's {champion_accuracy:.4f} "
            f"+ margin {promotion_margin:g}",
            deltas,
        )
    worst_digit = min(deltas, key=deltas.get)
    if -deltas[worst_digit] > max_recall_drop:
        return (
            False,
            f"recall of digit {worst_digit} drops by {-deltas[worst_digit]:.4f} "
            f"(> {max_recall_drop:g}) although accuracy {candidate_accuracy:.4f} >= "
            f"{needed:.4f}",
            deltas,
        )
    return (
        True,
        f"accuracy {candidate_accuracy:.4f} >= champion's {champion_accuracy:.4f} + margin "
        f"{promotion_margin:g}, and no digit's recall drops by more than {max_recall_drop:g}",
        deltas,
    )


def promote_model(
    evaluation_path: Path,
    validation_path: Path,
    tracking_uri: str,
    model_name: str,
    candidate_version: str,
    promotion_margin: float = 0.0,
    max_recall_drop: float = 0.005,
    timeout_s: float = 300,
) -> PromotionDecision:
    """Give ``candidate_version`` alias champion or challenger; record why on the version.

    ``evaluation_path`` holds the candidate's scores on ``validation_path`` (the evaluate step's
    report); the current champion is scored here on the same rows. The decision is recorded on
    the version before the alias moves, so a retried task applies the recorded decision instead
    of deciding again against a champion it may have replaced.
    """
    from mlflow import MlflowClient

    from digits.tracking import Budget, KfpMlflowPlugin, retry, tracking_session

    plugin = KfpMlflowPlugin.from_environment()
    tracking_uri = plugin.endpoint if plugin else tracking_uri
    budget = Budget(timeout_s)
    with tracking_session(tracking_uri, budget):
        client = MlflowClient(tracking_uri)
        version = retry(budget, lambda: client.get_model_version(model_name, candidate_version))
        recorded = version.tags.get(DECISION_TAG)
        if recorded:
            decision = PromotionDecision(**json.loads(recorded))
        else:
            # Another gate (the baseline's, a concurrent run's) may move the champion while this
            # one scores: decide again until the champion it scored against is still the one.
            for _ in range(3):
                decision = _decide_against_champion(
                    client,
                    budget,
                    evaluation_path,
                    validation_path,
                    model_name,
                    candidate_version,
                    promotion_margin,
                    max_recall_drop,
                )
                current = _current_champion(client, budget, model_name)
                if (current.version if current else "") in (
                    decision.compared_with,
                    candidate_version,
                ):
                    break
            tags = {**decision.tags(), DECISION_TAG: json.dumps(asdict(decision))}
            for key, value in tags.items():  # the bookkeeping tag last: it marks "recorded"
                retry(
                    budget,
                    lambda key=key, value=value: client.set_model_version_tag(
                        model_name, candidate_version, key, value
                    ),
                )
        retry(
            budget,
            lambda: client.set_registered_model_alias(
                model_name, decision.alias, candidate_version
            ),
        )
    return decision


def _current_champion(client, budget, model_name: str):
    """The version behind alias champion, or None."""
    from mlflow.exceptions import MlflowException

    from digits.tracking import retry

    def lookup():
        try:
            return client.get_model_version_by_alias(model_name, CHAMPION)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    return retry(budget, lookup)


def _decide_against_champion(
    client,
    budget,
    evaluation_path: Path,
    validation_path: Path,
    model_name: str,
    candidate_version: str,
    promotion_margin: float,
    max_recall_drop: float,
) -> PromotionDecision:
    from digits.artifacts import Evaluation
    from digits.data import ImageSet
    from digits.evaluation import evaluate_probabilities
    from digits.registry import load_logged_predictor
    from digits.tracking import retry

    champion = _current_champion(client, budget, model_name)
    rules = {"promotion_margin": promotion_margin, "max_recall_drop": max_recall_drop}
    validation = ImageSet.load(validation_path)
    common = {
        "model_name": model_name,
        "candidate_version": candidate_version,
        "validation_rows": len(validation),
        **rules,
    }
    candidate = Evaluation.read(evaluation_path)
    if sum(candidate.support) != len(validation):
        raise ValueError(
            f"{evaluation_path}: scores {sum(candidate.support)} rows, the validation split has "
            f"{len(validation)}; pass the evaluate step's report for this run's split"
        )
    if champion is None or str(champion.version) == str(candidate_version):
        return PromotionDecision(
            alias=CHAMPION,
            reason="first version of this model: it becomes champion",
            champion_version=candidate_version,
            candidate_accuracy=candidate.accuracy,
            **common,
        )
    champion_uri = f"models:/{model_name}/{champion.version}"
    champion_predictor = retry(
        budget, lambda: load_logged_predictor(champion_uri, client.tracking_uri)
    )
    incumbent = evaluate_probabilities(validation.labels, champion_predictor(validation.images))
    promote, reason, deltas = decide(
        candidate.accuracy,
        candidate.recall,
        incumbent.accuracy,
        incumbent.recall,
        promotion_margin,
        max_recall_drop,
    )
    return PromotionDecision(
        alias=CHAMPION if promote else CHALLENGER,
        reason=reason,
        champion_version=candidate_version if promote else str(champion.version),
        compared_with=str(champion.version),
        candidate_accuracy=candidate.accuracy,
        champion_accuracy=incumbent.accuracy,
        recall_deltas=deltas,
        **common,
    )


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
