"""MLflow plumbing shared by the steps that talk to the tracking server.

MLflow's REST client retries every POST on 5xx, creates included, and no create takes an
idempotency key: a create whose answer was lost can land twice. Inside :func:`tracking_session`
the client's own retries are off, and each step is retried as a whole, within one time budget,
only where that is safe: a create first looks up what an earlier attempt may already have made.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from digits import __version__
from digits.errors import RegistrationError

T = TypeVar("T")

PIPELINE_NAME = "digits-recognizer"
# Internal bookkeeping, kept apart from the tags a person reads.
PIPELINE_RUN_TAG = "digits.pipeline_run_id"
MODEL_FAMILY_TAG = "model_family"
# Set on the KFP task pods by the KFP API server's MLflow plugin.
KFP_MLFLOW_CONFIG_ENV = "KFP_MLFLOW_CONFIG"


@dataclass(frozen=True)
class KfpMlflowPlugin:
    """The parent run that KFP's MLflow plugin made for this pipeline run."""

    endpoint: str
    parent_run_id: str
    experiment_id: str
    auth_type: str = ""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> KfpMlflowPlugin | None:
        """Read ``KFP_MLFLOW_CONFIG`` (None when the plugin is off or the value is unusable)."""
        environ = os.environ if environ is None else environ
        raw = environ.get(KFP_MLFLOW_CONFIG_ENV, "").strip()
        if not raw:
            return None
        try:
            config = json.loads(raw)
        except json.JSONDecodeError:
            return None
        endpoint = config.get("endpoint") or environ.get("MLFLOW_TRACKING_URI", "")
        parent = config.get("parentRunId") or environ.get("MLFLOW_RUN_ID", "")
        experiment = config.get("experimentId") or environ.get("MLFLOW_EXPERIMENT_ID", "")
        if not (endpoint and parent and experiment):
            return None
        return cls(endpoint, parent, str(experiment), config.get("authType", ""))


class Budget:
    """A deadline shared by every MLflow call of one step."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: the server or the network failed, not the request."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code >= 500 or error.response.status_code in (408, 429)
    if isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError):
        return True
    if isinstance(error, MlflowException):
        from mlflow.exceptions import RestException

        # Only an answer (or silence) from the server is worth retrying: an MlflowException
        # raised on this side, e.g. by a model flavor, fails the same way every time.
        from_server = isinstance(error, RestException) or error.message.startswith("API request")
        status = error.get_http_status_code()
        # With client retries off, a refused connection surfaces as "failed with exception".
        return from_server and (
            status >= 500 or status in (408, 429) or "failed with exception" in error.message
        )
    return False


@contextmanager
def tracking_session(tracking_uri: str, budget: Budget) -> Iterator[None]:
    """Turn MLflow's own POST retries off and name the server in any final error."""
    from mlflow.exceptions import MlflowException

    keys = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        # One hung call must not eat the whole budget.
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(5, min(60, int(budget.seconds / 3)))),
    }
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    except RegistrationError:
        raise
    except Exception as error:
        if not (isinstance(error, MlflowException) or is_transient(error)):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        if is_transient(error):
            raise RegistrationError(
                f"MLflow at {tracking_uri}: {first_line} after retrying for "
                f"{budget.seconds:.0f} s; check mlflow_tracking_uri and that the tracking server "
                "is reachable, then retry the task (it registers exactly once)"
            ) from error
        raise RegistrationError(
            f"MLflow at {tracking_uri}: {first_line}; check the experiment, model and "
            "credentials named in the pipeline's parameters"
        ) from error
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def retry(budget: Budget, action: Callable[[], T]) -> T:
    """Run an idempotent ``action``, retrying transient failures until the budget is spent."""
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(budget.remaining()),
        wait=tenacity.wait_exponential(multiplier=0.5, max=15),
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
    )
    return retrying(action)


def create_once(budget: Budget, find: Callable[[], T | None], create: Callable[[], T]) -> T:
    """``find()`` or else ``create()``: a create whose answer was lost is found by the retry,
    and one that another process made first (RESOURCE_ALREADY_EXISTS) is found again."""
    from mlflow.exceptions import MlflowException

    def attempt() -> T:
        existing = find()
        if existing is not None:
            return existing
        try:
            return create()
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            made_meanwhile = find()
            if made_meanwhile is None:
                raise
            return made_meanwhile

    return retry(budget, attempt)


def experiment_once(client, budget: Budget, name: str, artifact_location: str = "") -> str:
    """The id of the experiment ``name``, created (with ``artifact_location``) when absent."""

    def find():
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else None

    return create_once(
        budget,
        find,
        lambda: client.create_experiment(name, artifact_location=artifact_location or None),
    )


def run_once(client, budget: Budget, experiment_id: str, tags: dict, name: str, start_ms) -> str:
    """The run tagged ``tags[PIPELINE_RUN_TAG]`` in the experiment, else one created with
    ``tags``: a retried step finds the run its earlier attempt made instead of making another."""
    key = tags[PIPELINE_RUN_TAG]

    def find():
        runs = client.search_runs(
            [experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    def create():
        return client.create_run(
            experiment_id, start_time=start_ms, tags=tags, run_name=name
        ).info.run_id

    return create_once(budget, find, create)


def git_commit() -> str | None:
    """The project's commit: baked into images as DIGITS_GIT_COMMIT, else from a git checkout."""
    commit = os.environ.get("DIGITS_GIT_COMMIT", "").strip()
    if commit:
        return commit
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        return None
    try:
        found = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    return found.stdout.strip() or None


def readable_tags(pipeline_run_id: str, pipeline_run_name: str, kfp_ui_url: str = "") -> dict:
    """Tags a person reads in the runs table: what made this run, and where it is in KFP."""
    tags = {
        "pipeline_name": PIPELINE_NAME,
        "project_version": __version__,
        "kfp_run_id": pipeline_run_id,
        "kfp_run_name": pipeline_run_name,
        "mlflow.source.name": PIPELINE_NAME,
        "mlflow.source.type": "JOB",
    }
    if kfp_ui_url:
        tags["kfp_run_url"] = kfp_run_url(kfp_ui_url, pipeline_run_id)
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


def schedule_tags(schedule_name: str, pipeline_version: str, scheduled_at: str) -> dict:
    """Which schedule and uploaded version made a run; empty values (a one-off run) left out.

    ``scheduled_at`` is KFP's ``PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``; kfp.local leaves
    the placeholder unresolved, which counts as empty.
    """
    if scheduled_at.startswith("{{$."):
        scheduled_at = ""
    tags = {
        "kfp_schedule": schedule_name,
        "kfp_pipeline_version": pipeline_version,
        "kfp_scheduled_at": scheduled_at if schedule_name else "",
    }
    return {key: value for key, value in tags.items() if value}


def kfp_run_url(kfp_ui_url: str, pipeline_run_id: str) -> str:
    return f"{kfp_ui_url.rstrip('/')}/#/runs/details/{pipeline_run_id}"


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
