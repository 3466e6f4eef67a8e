"""Submit a compiled pipeline to a Kubeflow Pipelines backend and optionally follow the run.

Everything a user can get wrong (unknown or ill-typed parameters, missing required ones) is
checked against the package's own IR before anything is sent; an unreachable host or refused
credentials is found by one health check before the run is created.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from digits.errors import SubmitError

# Where KFP's client looks for a projected service-account token (kfp.client constants).
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_DEFAULT_PATH = "/var/run/secrets/kubeflow/pipelines/token"
# V2beta1RuntimeState values after which a run never changes again.
FINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


@dataclass(frozen=True)
class SubmitRequest:
    """One run to create: where, which package, and with what arguments."""

    host: str
    package: Path
    experiment: str = "digits"
    run_name: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # raw KEY=VALUE text
    token: str | None = None
    namespace: str | None = None
    enable_caching: bool | None = None  # None: the compiled per-task settings

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalize_host(self.host))


@dataclass(frozen=True)
class SubmittedRun:
    """The created run, and the client that created it (to follow the run)."""

    run_id: str
    experiment_id: str
    url: str
    client: Any = field(repr=False, compare=False)


def normalize_host(host: str) -> str:
    """``localhost:8080`` -> ``http://localhost:8080``; no trailing slash.

    Neither urllib nor kfp.Client's REST client takes an address without a scheme.
    """
    host = host.strip().rstrip("/")
    return host if "://" in host else f"http://{host}"


def pipeline_parameters(package: Path) -> dict[str, dict]:
    """The pipeline's parameters from the IR's ``root.inputDefinitions``, by name."""
    try:
        spec = next(yaml.safe_load_all(package.read_text()))
        return dict(spec["root"].get("inputDefinitions", {}).get("parameters", {}))
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration) as error:
        raise SubmitError(
            f"{package}: not a compiled KFP pipeline ({error}); write one with `digits compile`"
        ) from None


def typed_arguments(params: Mapping[str, str], parameters: Mapping[str, dict]) -> dict[str, Any]:
    """Convert ``--param`` text to the IR's types; refuse unknown names and missing required ones.

    Raises:
        SubmitError: naming the parameter, the expected type and the fix.
    """
    unknown = sorted(set(params) - set(parameters))
    if unknown:
        raise SubmitError(
            f"unknown pipeline parameter(s) {', '.join(unknown)}; "
            f"the pipeline takes: {', '.join(sorted(parameters))}"
        )
    missing = sorted(
        name
        for name, definition in parameters.items()
        if not definition.get("isOptional") and name not in params
    )
    if missing:
        example = " ".join(f"--param {name}=..." for name in missing)
        raise SubmitError(f"required pipeline parameter(s) missing: pass {example}")
    return {
        name: _typed(name, text, parameters[name]["parameterType"]) for name, text in params.items()
    }


def _typed(name: str, text: str, parameter_type: str) -> Any:
    try:
        if parameter_type == "NUMBER_INTEGER":
            return int(text)
        if parameter_type == "NUMBER_DOUBLE":
            return float(text)
        if parameter_type == "BOOLEAN":
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if parameter_type in ("LIST", "STRUCT"):
            return json.loads(text)
    except ValueError:
        kinds = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number"}
        kinds |= {"BOOLEAN": "true or false", "LIST": "a JSON list", "STRUCT": "a JSON object"}
        raise SubmitError(
            f"--param {name}={text}: {name} takes {kinds[parameter_type]} ({parameter_type})"
        ) from None
    return text


def resolve_token(token: str | None) -> tuple[str | None, Path | None]:
    """(``--token``, None), else (None, service-account token file) when one exists."""
    if token:
        return token, None
    path = Path(os.environ.get(SA_TOKEN_PATH_ENV) or SA_TOKEN_DEFAULT_PATH)
    return None, (path if path.is_file() else None)


def check_reachable(host: str, bearer: str | None, timeout: float = 10.0) -> None:
    """One GET of the API's healthz, so a wrong host or refused credentials fail fast and clearly.

    kfp.Client would otherwise retry healthz for 25 s and log each failure with a traceback.
    """
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise _auth_error(host, error.code) from None
        raise SubmitError(
            f"{host} answered HTTP {error.code} on /apis/v2beta1/healthz: is --host the KFP API "
            "(e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`, then "
            "--host http://localhost:8080)?"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SubmitError(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host "
            "(e.g. port-forward svc/ml-pipeline-ui and use --host http://localhost:8080)"
        ) from None


def _auth_error(host: str, status: int) -> SubmitError:
    return SubmitError(
        f"{host} refused the credentials (HTTP {status}): pass a valid --token, or set "
        f"{SA_TOKEN_PATH_ENV} to a service-account token file with access to the namespace"
    )


def connect(request: SubmitRequest):
    """A ``kfp.Client`` for ``request.host`` with KFP's standard credentials.

    ``request`` is anything with ``host`` (normalized), ``token`` and ``namespace``.
    """
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    token, token_file = resolve_token(request.token)
    check_reachable(request.host, token or (token_file.read_text().strip() if token_file else None))
    credentials = ServiceAccountTokenVolumeCredentials(str(token_file)) if token_file else None
    with warnings.catch_warnings():  # "This client only works with KFP v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        return call_api(
            request.host,
            lambda: kfp.Client(
                host=request.host,
                existing_token=token,
                credentials=credentials,
                namespace=request.namespace or "kubeflow",
            ),
        )


def submit(request: SubmitRequest) -> SubmittedRun:
    """Check the arguments against the package, then create the run.

    Raises:
        SubmitError: bad arguments (before anything is sent), unreachable host, refused auth,
            or a run the API refused.
    """
    arguments = typed_arguments(request.params, pipeline_parameters(request.package))
    client = connect(request)
    # kfp.Client prints its own "Experiment details"/"Run details" links; we print ours.
    with contextlib.redirect_stdout(io.StringIO()):
        result = call_api(
            request.host,
            lambda: client.create_run_from_pipeline_package(
                str(request.package),
                arguments=arguments,
                run_name=request.run_name,
                experiment_name=request.experiment,
                namespace=request.namespace,
                enable_caching=request.enable_caching,
            ),
        )
    run = result.run_info
    return SubmittedRun(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        url=f"{request.host.rstrip('/')}/#/runs/details/{run.run_id}",
        client=client,
    )


def wait_for_run(
    run: SubmittedRun,
    host: str,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 24 * 3600,
    on_state: Callable[[str], None] = lambda state: None,
):
    """Poll the run until it reaches a final state; return the last ``V2beta1Run``.

    Not ``kfp.Client.wait_for_run_completion``: that one never stops on a CANCELED run.
    """
    deadline = time.monotonic() + timeout_seconds
    last_state = None
    while True:
        current = call_api(host, lambda: run.client.get_run(run.run_id))
        state = str(current.state or "PENDING")
        if state != last_state:
            on_state(state)
            last_state = state
        if state in FINAL_STATES:
            return current
        if time.monotonic() > deadline:
            raise SubmitError(
                f"run {run.run_id} still {state} after {timeout_seconds:.0f} s; "
                "follow it in the KFP UI or raise --timeout"
            )
        time.sleep(poll_seconds)


def call_api(host: str, call: Callable[[], Any]) -> Any:
    """Run one KFP API call, turning its transport and HTTP errors into one-line SubmitErrors."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call()
    except ApiException as error:
        if error.status in (401, 403):
            raise _auth_error(host, error.status) from None
        raise SubmitError(
            f"{host} refused the request (HTTP {error.status}): {_api_message(error)}"
        ) from None
    except HTTPError as error:
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {host} ({error})") from None


def _api_message(error) -> str:
    try:
        body = json.loads(error.body)
        return str(body.get("message") or body.get("error") or body)
    except (TypeError, ValueError, AttributeError):
        return str(error.body or error.reason).strip().splitlines()[0]
