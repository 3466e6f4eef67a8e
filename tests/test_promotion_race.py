"""Gates that finish at once, against one real `mlflow server`: one champion, whatever the timing.

Each round registers scripted models of known quality (each one's mistakes a subset of every
worse one's, so running the gates one after the other always ends with the best as champion)
as versions in a random order, then releases 2 or 4 gates together with a barrier, each in its
own process, as the CNN's and the baseline's gates of one run, or several pipeline runs, do.
"""

import json
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import scripted_models
from mlflow import MlflowClient

from digits.data import ImageSet
from digits.evaluation import evaluate_probabilities
from digits.predictor import all_class_probabilities
from digits.promotion import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    LOCK_EXPIRES_TAG,
    LOCK_HOLDER_TAG,
    LOCK_SUFFIX,
    SUPERSEDED_TAG,
    GateInputs,
    _record,
    run_gate,
)
from digits.registry import registry_client
from digits.tracking import Budget

ROUNDS = 20
# Validation mistakes of each scripted model: fewer is better, and each set is a subset of the
# next, so no digit's recall drops when a better model replaces a worse one.
MISTAKES = (2, 5, 9, 14)


@pytest.fixture(scope="module")
def models(mlflow_server, split_sets, tmp_path_factory):
    """(experiment id, {mistakes: (evaluation path, logged model uri)}) logged once."""
    import joblib
    import mlflow

    validation = ImageSet.load(split_sets[1])
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"race-{time.time_ns()}")
    mlflow.set_tracking_uri(mlflow_server)
    work = tmp_path_factory.mktemp("race")
    spread = list(range(0, len(validation), 3))
    logged = {}
    for mistakes in MISTAKES:
        classifier = scripted_models.ScriptedClassifier(
            validation.images, scripted_models.scripted(validation.labels, spread[:mistakes])
        )
        evaluation_path = work / f"evaluation-{mistakes}.json"
        evaluate_probabilities(
            validation.labels, all_class_probabilities(classifier, validation.images)
        ).write(evaluation_path)
        run = client.create_run(experiment_id)
        model_dir = scripted_models.save(classifier, work / f"model-{mistakes}")
        info = mlflow.sklearn.log_model(
            joblib.load(model_dir / "model.joblib"),
            name="model",
            run_id=run.info.run_id,
            serialization_format="cloudpickle",
        )
        logged[mistakes] = (evaluation_path, info, run.info.run_id)
    return experiment_id, logged


def _gate_after_barrier(barrier, tracking_uri: str, gate: GateInputs) -> str:
    """One gate in its own process, released together with the others."""
    from digits.tracking import tracking_session

    budget = Budget(120)
    with tracking_session(tracking_uri, budget):
        client = registry_client(tracking_uri)
        barrier.wait()
        return run_gate(client, budget, gate).alias


def _register_round(client, model_name: str, logged: dict, order: list[int]) -> dict[int, str]:
    client.create_registered_model(model_name)
    versions = {}
    for mistakes in order:
        _, info, run_id = logged[mistakes]
        versions[mistakes] = str(
            client.create_model_version(
                model_name, source=info.model_uri, run_id=run_id, model_id=info.model_id
            ).version
        )
    return versions


def _assert_one_consistent_champion(client, model_name: str, versions: dict[int, str]) -> None:
    best = versions[min(versions)]
    champion = client.get_model_version_by_alias(model_name, CHAMPION)
    assert str(champion.version) == best, (versions, champion.version)
    model = client.get_registered_model(model_name)
    for version in versions.values():
        tags = client.get_model_version(model_name, version).tags
        decision = json.loads(tags[DECISION_TAG])
        if model.aliases.get(CHAMPION) == version:
            assert decision["alias"] == CHAMPION
        elif model.aliases.get(CHALLENGER) == version:
            assert decision["alias"] == CHALLENGER
        if decision["alias"] == CHAMPION and version != best:
            # Promoted once, replaced since by a better one, and it says by which.
            assert tags[SUPERSEDED_TAG] in versions.values(), tags
    # Nobody holds the lock once every gate has finished.
    assert not client.search_registered_models(f"name = '{model_name}{LOCK_SUFFIX}'")


@pytest.mark.parametrize("gates", [2, 4])
def test_gates_released_together_leave_the_best_model_champion(
    mlflow_server, models, split_sets, gates
):
    _, logged = models
    client = registry_client(mlflow_server)
    shuffle = random.Random(gates)
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, ProcessPoolExecutor(gates, mp_context=context) as pool:
        for round_number in range(ROUNDS):
            model_name = f"race-{gates}-{round_number}-{time.time_ns()}"
            order = shuffle.sample(MISTAKES[:gates], gates)
            versions = _register_round(client, model_name, logged, order)
            barrier = manager.Barrier(gates)
            futures = [
                pool.submit(
                    _gate_after_barrier,
                    barrier,
                    mlflow_server,
                    GateInputs(logged[mistakes][0], split_sets[1], model_name, versions[mistakes]),
                )
                for mistakes in order
            ]
            aliases = [future.result(timeout=180) for future in futures]
            assert aliases.count(CHAMPION) >= 1
            _assert_one_consistent_champion(client, model_name, versions)


def test_a_retried_gate_decides_again_when_the_champion_changed(mlflow_server, models, split_sets):
    _, logged = models
    client = registry_client(mlflow_server)
    model_name = f"retried-{time.time_ns()}"
    versions = _register_round(client, model_name, logged, [9, 14, 5])
    budget = Budget(60)

    def gate(mistakes):
        inputs = GateInputs(logged[mistakes][0], split_sets[1], model_name, versions[mistakes])
        return inputs, run_gate(client, budget, inputs)

    gate(9)  # the first version: champion
    # v2 (14 mistakes) is decided against v1 and recorded; its task will be retried later.
    gate(14)
    tags = client.get_model_version(model_name, versions[14]).tags
    assert json.loads(tags[DECISION_TAG])["compared_with"] == versions[9]
    # Meanwhile v3 (5 mistakes) beats v1.
    gate(5)
    # The retry must not re-apply a decision made against a champion that is gone.
    _, again = gate(14)
    assert again.compared_with == versions[5] and again.alias == CHALLENGER
    assert client.get_model_version_by_alias(model_name, CHAMPION).version == versions[5]


def test_a_recorded_promotion_is_not_reapplied_over_a_newer_champion(
    mlflow_server, models, split_sets
):
    """A gate recorded 'champion' against v1 and died; v3 has beaten v1 since: the retry re-decides
    against v3 and does not demote it."""
    from digits.promotion import PromotionDecision

    _, logged = models
    client = registry_client(mlflow_server)
    model_name = f"stale-{time.time_ns()}"
    versions = _register_round(client, model_name, logged, [14, 9, 2])
    budget = Budget(60)
    run_gate(client, budget, GateInputs(logged[14][0], split_sets[1], model_name, versions[14]))
    stale = PromotionDecision(
        model_name=model_name,
        candidate_version=versions[9],
        alias=CHAMPION,
        reason="recorded before the pod died",
        champion_version=versions[9],
        compared_with=versions[14],
    )
    _record(client, budget, stale)
    run_gate(client, budget, GateInputs(logged[2][0], split_sets[1], model_name, versions[2]))

    retried = run_gate(
        client, budget, GateInputs(logged[9][0], split_sets[1], model_name, versions[9])
    )
    assert retried.alias == CHALLENGER and retried.compared_with == versions[2]
    assert client.get_model_version_by_alias(model_name, CHAMPION).version == versions[2]


def test_a_lock_left_by_a_killed_gate_is_taken_over_after_its_lease(
    mlflow_server, models, split_sets
):
    _, logged = models
    client = registry_client(mlflow_server)
    model_name = f"lease-{time.time_ns()}"
    versions = _register_round(client, model_name, logged, [9])
    inputs = GateInputs(logged[9][0], split_sets[1], model_name, versions[9])
    lock_name = model_name + LOCK_SUFFIX
    expired = str(int(time.time() * 1000) - 1)
    client.create_registered_model(
        lock_name, tags={LOCK_HOLDER_TAG: "a killed gate", LOCK_EXPIRES_TAG: expired}
    )

    assert run_gate(client, Budget(30), inputs).alias == CHAMPION
    assert not client.search_registered_models(f"name = '{lock_name}'")


def test_a_held_lock_times_out_with_one_line(mlflow_server, models, split_sets):
    from digits.errors import RegistrationError

    _, logged = models
    client = registry_client(mlflow_server)
    model_name = f"held-{time.time_ns()}"
    versions = _register_round(client, model_name, logged, [9])
    later = str(int(time.time() * 1000) + 600_000)
    client.create_registered_model(
        model_name + LOCK_SUFFIX, tags={LOCK_HOLDER_TAG: "another gate", LOCK_EXPIRES_TAG: later}
    )
    inputs = GateInputs(logged[9][0], split_sets[1], model_name, versions[9])

    with pytest.raises(RegistrationError) as raised:
        run_gate(client, Budget(2), inputs)
    message = str(raised.value)
    assert "\n" not in message and "held by another gate" in message
    assert f"delete the registered model {model_name}{LOCK_SUFFIX}" in message


def test_a_lock_released_while_the_server_answers_a_duplicate_is_taken(
    mlflow_server, models, split_sets
):
    """The SQL store answers a duplicate name by reading the existing model
    (``SqlAlchemyStore.create_registered_model``, mlflow 3.17); when its holder deletes it in
    between, the create fails with RESOURCE_DOES_NOT_EXIST. The other gate saw exactly that
    when the race test ran in CI; here the holder releases right before the answer."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    _, logged = models
    client = registry_client(mlflow_server)
    model_name = f"released-{time.time_ns()}"
    versions = _register_round(client, model_name, logged, [9])
    lock_name = model_name + LOCK_SUFFIX
    create = client.create_registered_model
    answers = []

    def create_while_the_holder_releases(name, *args, **kwargs):
        if name == lock_name and not answers:
            create(name, tags={LOCK_HOLDER_TAG: "another gate"})
            client.delete_registered_model(name)  # the holder finishes
            answers.append("lost")
            raise MlflowException(
                f"Registered Model with name={name} not found",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        return create(name, *args, **kwargs)

    client.create_registered_model = create_while_the_holder_releases
    inputs = GateInputs(logged[9][0], split_sets[1], model_name, versions[9])

    assert run_gate(client, Budget(30), inputs).alias == CHAMPION
    assert answers == ["lost"]
    assert not client.search_registered_models(f"name = '{lock_name}'")
