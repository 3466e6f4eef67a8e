"""digits.tracking against a real `mlflow server`: creates that race with another process."""

import threading
import time

from mlflow import MlflowClient

from digits.tracking import Budget, create_once


def test_runs_creating_one_experiment_at_once_both_get_it(mlflow_server):
    """Two pipeline runs starting together on a new experiment name: no RESOURCE_ALREADY_EXISTS."""
    name = f"created-together-{time.time_ns()}"
    workers = 4
    barrier = threading.Barrier(workers)
    results, errors = [], []

    def create():
        client = MlflowClient(mlflow_server)

        def find():
            experiment = client.get_experiment_by_name(name)
            return experiment.experiment_id if experiment else None

        def make():
            barrier.wait(timeout=30)  # every worker has looked and found nothing
            return client.create_experiment(name)

        try:
            results.append(create_once(Budget(30), find, make))
        except Exception as error:  # noqa: BLE001  (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert len(results) == workers and len(set(results)) == 1
