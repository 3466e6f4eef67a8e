"""The champion/challenger gate: decide on side-by-side scores, then move the alias under a lock.

Several gates can finish at once: the CNN's and the baseline's in one pipeline run, and any number
of pipeline runs against one tracking server. MLflow has no compare-and-set on aliases, so the
gate holds a :class:`PromotionLock` while it reads the champion, scores against it, records its
decision and moves the alias. The lock is the one atomic operation MLflow's registry offers:
creating a registered model fails with RESOURCE_ALREADY_EXISTS when the name exists (a unique key
on SQL stores). It carries a lease, so a gate killed while holding it blocks the others for at
most ``lease_s``; a gate never moves an alias after its lease ran out.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digits.errors import RegistrationError

CHAMPION, CHALLENGER = "champion", "challenger"
# The whole decision as JSON on the version: a retried gate re-applies it while the champion it
# was decided against is still the champion, and decides again otherwise.
DECISION_TAG = "digits.promotion"
# On a former champion: the version that replaced it (its own decision stays as it was made).
SUPERSEDED_TAG = "promotion.superseded_by"
LOCK_SUFFIX = ".promotion-lock"
LOCK_HOLDER_TAG = "holder"
LOCK_EXPIRES_TAG = "expires_at_ms"


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


class PromotionLock:
    """A lease on the aliases of one registered model, held by one candidate version's gate.

    The lock is the registered model ``<name>.promotion-lock``, created with the holder and the
    lease's end as tags and deleted on release. The holder is the candidate version, so a
    retried gate (a new pod) takes over the lock its killed attempt left instead of waiting for
    the lease. A lock whose lease ran out is taken over after re-reading it (the holder must be
    unchanged): that happens only after a gate was killed holding it.
    """

    def __init__(self, client, model_name: str, holder: str, budget, lease_s: float = 120.0):
        self.client, self.model_name, self.holder, self.budget = client, model_name, holder, budget
        self.name = model_name + LOCK_SUFFIX
        self.lease_s = lease_s
        self.acquired_at = 0.0

    def __enter__(self) -> PromotionLock:
        from digits.tracking import retry

        wait = 0.05
        while True:
            if retry(self.budget, self._try_acquire):
                self.acquired_at = time.monotonic()
                return self
            if self.budget.remaining() <= 0:
                lock = retry(self.budget, self._read)
                holder = lock.tags.get(LOCK_HOLDER_TAG, "?") if lock else "nobody"
                raise RegistrationError(
                    f"{self.model_name}: the promotion lock {self.name} is held by {holder} "
                    f"and stayed held for {self.budget.seconds:.0f} s; if no gate is running, "
                    f"delete the registered model {self.name} and retry the task"
                )
            # Jitter, so gates released together do not retry in lockstep.
            time.sleep(min(self.budget.remaining(), wait * (0.5 + random.random())))
            wait = min(wait * 2, 1.0)

    def __exit__(self, *exc) -> None:
        from digits.tracking import retry

        retry(self.budget, self._release)

    def check_lease(self) -> None:
        """Raise before a write when the lease may have run out (another gate may hold it)."""
        held = time.monotonic() - self.acquired_at
        if held > 0.8 * self.lease_s:
            raise RegistrationError(
                f"{self.model_name}: the gate held the promotion lock for {held:.0f} s, close "
                f"to its {self.lease_s:.0f} s lease, so it moved no alias; retry the task"
            )

    def _try_acquire(self) -> bool:
        from mlflow.exceptions import MlflowException

        while True:
            expires = int(time.time() * 1000 + self.lease_s * 1000)
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={LOCK_HOLDER_TAG: self.holder, LOCK_EXPIRES_TAG: str(expires)},
                    description=f"Held by the promotion gate of {self.holder} on "
                    f"{socket.gethostname()} (pid {os.getpid()}); deleted when it finishes.",
                )
                return True
            except MlflowException as error:
                # RESOURCE_DOES_NOT_EXIST: the SQL store answers a duplicate name by reading the
                # existing model, which its holder may have deleted in between: released.
                if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                    continue
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            lock = self._read()
            if lock is None:  # released meanwhile: try again at once
                continue
            holder = lock.tags.get(LOCK_HOLDER_TAG)
            if holder == self.holder:  # our own: a lost answer, or a killed earlier attempt
                try:
                    self.client.set_registered_model_tag(self.name, LOCK_EXPIRES_TAG, str(expires))
                    return True
                except MlflowException as error:
                    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                        continue  # taken over after its lease and released since
                    raise
            if int(lock.tags.get(LOCK_EXPIRES_TAG, "0")) < time.time() * 1000:
                current = self._read()
                if current is not None and current.tags.get(LOCK_HOLDER_TAG) == holder:
                    self._delete()
            return False

    def _read(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _delete(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model(self.name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _release(self) -> None:
        lock = self._read()
        if lock is not None and lock.tags.get(LOCK_HOLDER_TAG) == self.holder:
            self._delete()


@dataclass(frozen=True)
class GateInputs:
    """What one gate decides on: the candidate's scores on this run's validation rows."""

    evaluation_path: Path
    validation_path: Path
    model_name: str
    candidate_version: str
    promotion_margin: float = 0.0
    max_recall_drop: float = 0.005


def run_gate(client, budget, gate: GateInputs, lease_s: float = 120.0) -> PromotionDecision:
    """Decide for ``gate.candidate_version`` and move the aliases, holding the promotion lock.

    A decision recorded by an earlier attempt is re-applied only while the champion is still
    the one it was decided against (or the one it made); otherwise the gate decides again.
    """
    from digits.tracking import retry

    holder = f"{gate.model_name} v{gate.candidate_version}"
    with PromotionLock(client, gate.model_name, holder, budget, lease_s) as lock:
        champion = current_champion(client, budget, gate.model_name)
        champion_version = str(champion.version) if champion else ""
        version = retry(
            budget, lambda: client.get_model_version(gate.model_name, gate.candidate_version)
        )
        recorded = version.tags.get(DECISION_TAG)
        decision = PromotionDecision(**json.loads(recorded)) if recorded else None
        still_valid = decision is not None and champion_version in (
            decision.compared_with,
            decision.champion_version,
        )
        if not still_valid:
            decision = _decide_against(client, budget, gate, champion)
            _record(client, budget, decision)
        lock.check_lease()
        _apply(client, budget, decision)
    return decision


def current_champion(client, budget, model_name: str):
    """The version behind alias champion, or None."""
    from digits.registry import is_not_found
    from digits.tracking import retry

    def lookup():
        try:
            return client.get_model_version_by_alias(model_name, CHAMPION)
        except Exception as error:
            if is_not_found(error):
                return None
            raise

    return retry(budget, lookup)


def _record(client, budget, decision: PromotionDecision) -> None:
    from digits.tracking import retry

    tags = {**decision.tags(), DECISION_TAG: json.dumps(asdict(decision))}
    for key, value in tags.items():  # the bookkeeping tag last: it marks "recorded"
        retry(
            budget,
            lambda key=key, value=value: client.set_model_version_tag(
                decision.model_name, decision.candidate_version, key, value
            ),
        )


def _apply(client, budget, decision: PromotionDecision) -> None:
    """Move the candidate's alias; a replaced champion says by whom. Idempotent."""
    from digits.tracking import retry

    name, candidate = decision.model_name, decision.candidate_version
    retry(budget, lambda: client.set_registered_model_alias(name, decision.alias, candidate))
    if decision.promoted and decision.compared_with and decision.compared_with != candidate:
        retry(
            budget,
            lambda: client.set_model_version_tag(
                name, decision.compared_with, SUPERSEDED_TAG, candidate
            ),
        )


def _decide_against(client, budget, gate: GateInputs, champion) -> PromotionDecision:
    from digits.artifacts import Evaluation
    from digits.data import ImageSet
    from digits.evaluation import evaluate_probabilities
    from digits.registry import load_logged_predictor
    from digits.tracking import retry

    rules = {"promotion_margin": gate.promotion_margin, "max_recall_drop": gate.max_recall_drop}
    validation = ImageSet.load(gate.validation_path)
    common = {
        "model_name": gate.model_name,
        "candidate_version": gate.candidate_version,
        "validation_rows": len(validation),
        **rules,
    }
    candidate = Evaluation.read(gate.evaluation_path)
    if sum(candidate.support) != len(validation):
        raise ValueError(
            f"{gate.evaluation_path}: scores {sum(candidate.support)} rows, the validation split "
            f"has {len(validation)}; pass the evaluate step's report for this run's split"
        )
    if champion is None or str(champion.version) == str(gate.candidate_version):
        return PromotionDecision(
            alias=CHAMPION,
            reason="first version of this model: it becomes champion",
            champion_version=gate.candidate_version,
            candidate_accuracy=candidate.accuracy,
            **common,
        )
    champion_uri = f"models:/{gate.model_name}/{champion.version}"
    champion_predictor = retry(
        budget, lambda: load_logged_predictor(champion_uri, client.tracking_uri)
    )
    incumbent = evaluate_probabilities(validation.labels, champion_predictor(validation.images))
    promote, reason, deltas = decide(
        candidate.accuracy,
        candidate.recall,
        incumbent.accuracy,
        incumbent.recall,
        gate.promotion_margin,
        gate.max_recall_drop,
    )
    return PromotionDecision(
        alias=CHAMPION if promote else CHALLENGER,
        reason=reason,
        champion_version=gate.candidate_version if promote else str(champion.version),
        compared_with=str(champion.version),
        candidate_accuracy=candidate.accuracy,
        champion_accuracy=incumbent.accuracy,
        recall_deltas=deltas,
        **common,
    )
