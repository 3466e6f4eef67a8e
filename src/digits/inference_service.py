"""`digits deploy`: a KServe InferenceService running `digits serve` on one exact model version.

The InferenceService is built from the ``kserve`` SDK's typed models (and the Kubernetes client's
``V1Container`` & co.), so a misspelt field fails here, not on the cluster. Its predictor is a
custom container, the project's CPU image running ``digits serve --model-uri models:/NAME/N``:
the version, never the alias, is in its arguments and in the ``digits/*`` annotations, so what a
revision serves never changes under it. When an older version is being served, the new one goes
out as a KServe canary (``canaryTrafficPercent``, default 10: KServe keeps the rest on the last
ready revision); ``--promote`` sends it all traffic.

The pipeline's deploy step calls :func:`render_inference_service` and
:func:`apply_inference_service`; `digits deploy` is the same two calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from digits.cluster import MLFLOW_CREDENTIAL_KEYS, ClusterSettings, Resources
from digits.config import DEFAULT_MLFLOW_URI
from digits.errors import ServingError
from digits.registry import ModelVersionRef

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
ANNOTATION = "digits/"  # prefix of the annotations that say which version is served
PORT = 8080


@dataclass(frozen=True)
class DeploySettings:
    """Where and how the InferenceService runs; defaults match the pipeline's cluster settings."""

    name: str = "digits"
    namespace: str = "kubeflow"
    image: str = field(default_factory=lambda: ClusterSettings().image)
    # The tracking server as the predictor pod reaches it (the pipeline's default, in-cluster).
    mlflow_uri: str = DEFAULT_MLFLOW_URI
    mlflow_secret: str = field(default_factory=lambda: ClusterSettings().mlflow_secret)
    canary_percent: int = 10
    resources: Resources = Resources(cpu_request="1", cpu_limit="2", memory="2Gi")
    min_replicas: int = 1
    max_batch: int = 1024
    run_as_user: int = field(default_factory=lambda: ClusterSettings().run_as_user)
    run_as_group: int = field(default_factory=lambda: ClusterSettings().run_as_group)

    def __post_init__(self) -> None:
        if not 1 <= self.canary_percent <= 100:
            raise ServingError(
                f"--canary-percent {self.canary_percent}: expected 1-100, the share of requests "
                "the new version gets while the old one keeps the rest"
            )


@dataclass(frozen=True)
class Deployed:
    """What an existing InferenceService serves, from its ``digits/*`` annotations."""

    version: str | None
    canary_percent: int | None
    model_name: str | None = None


def traffic_percent(
    version: str, current: Deployed | None, canary_percent: int, promote: bool
) -> int | None:
    """The new revision's ``canaryTrafficPercent``; None leaves KServe's default, all traffic.

    A first deployment takes all traffic; a new version beside an older one gets the canary
    share; ``promote`` gives 100; re-deploying the version already served keeps its split.
    """
    if promote:
        return 100
    if current is None or current.version is None:
        return None
    if current.version != version:
        return canary_percent
    return current.canary_percent


def render_inference_service(
    version: ModelVersionRef,
    settings: DeploySettings | None = None,
    current: Deployed | None = None,
    promote: bool = False,
) -> dict:
    """The ``serving.kserve.io/v1beta1`` InferenceService for ``version``, as a plain dict.

    Args:
        version: the registered model version to serve, pinned (see ``registry.resolve_version``).
        settings: name, namespace, image, sizes; defaults to :class:`DeploySettings`.
        current: what the existing InferenceService serves (:func:`read_deployed`), if any.
        promote: send the version all traffic (ends a canary).
    """
    from kubernetes import client

    from digits.kserve_compat import import_kserve

    kserve = import_kserve()
    settings = settings or DeploySettings()
    resources = settings.resources
    credentials = [
        client.V1EnvVar(
            name=key,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(
                    name=settings.mlflow_secret, key=key, optional=True
                )
            ),
        )
        for key in MLFLOW_CREDENTIAL_KEYS
    ]
    probe = {"port": PORT, "scheme": "HTTP"}
    args = [
        "serve",
        "--model-uri", version.uri,  # the exact version, never the alias
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--max-batch", str(settings.max_batch),
    ]  # fmt: skip
    container = client.V1Container(
        name="kserve-container",
        image=settings.image,
        command=["digits"],
        args=args,
        env=[
            client.V1EnvVar(name="MLFLOW_TRACKING_URI", value=settings.mlflow_uri),
            *credentials,
            # TensorFlow sizes its thread pools by the node's cores, not the pod's CPU limit.
            client.V1EnvVar(name="TF_NUM_INTRAOP_THREADS", value=_whole_cpus(resources.cpu_limit)),
            client.V1EnvVar(name="TF_NUM_INTEROP_THREADS", value="1"),
        ],
        ports=[client.V1ContainerPort(container_port=PORT, name="http1", protocol="TCP")],
        resources=client.V1ResourceRequirements(
            requests={"cpu": resources.cpu_request, "memory": resources.memory},
            limits={"cpu": resources.cpu_limit, "memory": resources.memory},
        ),
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=settings.run_as_user,
            run_as_group=settings.run_as_group,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        # The server listens only once the model is loaded and warmed up.
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/v2/health/ready", **probe),
            period_seconds=5,
            failure_threshold=3,
        ),
        liveness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/v2/health/live", **probe),
            initial_delay_seconds=30,  # importing TensorFlow and loading the model
            period_seconds=10,
            failure_threshold=6,
        ),
    )
    annotations = {
        f"{ANNOTATION}model-name": version.name,
        f"{ANNOTATION}model-version": version.version,
        f"{ANNOTATION}model-uri": version.uri,
        f"{ANNOTATION}requested-uri": version.requested,
        f"{ANNOTATION}run-id": version.run_id,
    }
    labels = {"app.kubernetes.io/name": "digits", "app.kubernetes.io/component": "serving"}
    # Pod-level fields (securityContext, automountServiceAccountToken) are left out: Knative,
    # which runs the predictor in KServe's default Serverless mode, refuses most of them unless
    # its feature flags allow them; the container's security context covers the user.
    predictor = kserve.V1beta1PredictorSpec(
        containers=[container],
        min_replicas=settings.min_replicas,
        canary_traffic_percent=traffic_percent(
            version.version, current, settings.canary_percent, promote
        ),
        annotations=dict(annotations),
        labels=dict(labels),
    )
    service = kserve.V1beta1InferenceService(
        api_version=f"{GROUP}/{VERSION}",
        kind="InferenceService",
        metadata=client.V1ObjectMeta(
            name=settings.name,
            namespace=settings.namespace,
            annotations=annotations,
            labels=labels,
        ),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=predictor),
    )
    return client.ApiClient().sanitize_for_serialization(service)


def _whole_cpus(quantity: str) -> str:
    """'2' -> '2', '1500m' -> '1', '500m' -> '1': threads for a CPU limit."""
    cores = int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return str(max(1, int(cores)))


def deployed_from(service: dict | None) -> Deployed | None:
    """What an InferenceService object (as the API returns it) serves; None when absent."""
    if service is None:
        return None
    annotations = service.get("metadata", {}).get("annotations") or {}
    percent = service.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    return Deployed(
        version=annotations.get(f"{ANNOTATION}model-version"),
        canary_percent=percent,
        model_name=annotations.get(f"{ANNOTATION}model-name"),
    )


def read_inference_service(name: str, namespace: str, api_client=None) -> dict | None:
    """GET the InferenceService; None when there is none.

    Raises:
        ServingError: the API refused or could not be reached (one line).
    """
    from kubernetes import client

    api = client.CustomObjectsApi(api_client or kube_api_client())
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise ServingError(_api_error("read", namespace, name, error)) from None
    except Exception as error:  # urllib3's MaxRetryError and the like
        raise ServingError(_unreachable(api, error)) from None


def apply_inference_service(service: dict, exists: bool | None = None, api_client=None) -> str:
    """Create the InferenceService, or merge-patch it when it exists; 'created' or 'patched'.

    Args:
        service: what :func:`render_inference_service` returned.
        exists: whether it exists (as :func:`read_inference_service` found); None: GET first.

    Raises:
        ServingError: the API refused (e.g. RBAC: apply manifests/serving) or is unreachable.
    """
    from kubernetes import client

    api_client = api_client or kube_api_client()
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    if exists is None:
        exists = read_inference_service(name, namespace, api_client) is not None
    api = client.CustomObjectsApi(api_client)
    action = "patch" if exists else "create"
    try:
        if exists:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, service)
        else:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, service)
    except client.ApiException as error:
        raise ServingError(_api_error(action, namespace, name, error)) from None
    except Exception as error:
        raise ServingError(_unreachable(api, error)) from None
    return "patched" if exists else "created"


def kube_api_client():
    """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config.

    Raises:
        ServingError: no configuration found.
    """
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            return client.ApiClient()
        # KUBECONFIG read now: the client library reads it once, when first imported.
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    except config.ConfigException as error:
        raise ServingError(
            f"no Kubernetes configuration ({' '.join(str(error).split())}); set KUBECONFIG or "
            "run inside the cluster, or drop --apply and apply the written file yourself"
        ) from None


def _api_error(action: str, namespace: str, name: str, error) -> str:
    import json

    try:
        reason = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        reason = error.reason
    hint = (
        "; grant the InferenceService verbs with `kubectl apply -k manifests/serving` (RBAC for "
        "the pipeline-runner service account)"
        if error.status in (401, 403)
        else "; is KServe installed (kubectl get crd inferenceservices.serving.kserve.io)?"
        if error.status == 404
        else ""
    )
    reason = " ".join(str(reason).split())
    return (
        f"cannot {action} InferenceService {namespace}/{name}: HTTP {error.status} {reason}{hint}"
    )


def _unreachable(api, error: Exception) -> str:
    host = api.api_client.configuration.host
    return f"cannot reach the Kubernetes API at {host}: {type(error).__name__}"


@dataclass(frozen=True)
class DeployOutcome:
    """What `digits deploy` rendered and, with --apply, did."""

    service: dict
    version: ModelVersionRef
    current: Deployed | None
    action: str | None  # 'created', 'patched', or None when not applied

    @property
    def traffic(self) -> int | None:
        return self.service["spec"]["predictor"].get("canaryTrafficPercent")

    def summary(self) -> str:
        where = f"InferenceService {self.service['metadata']['namespace']}/"
        where += self.service["metadata"]["name"]
        old = self.current.version if self.current else None
        if self.traffic is None or (self.traffic == 100 and old in (None, self.version.version)):
            split = "all traffic"
        elif self.traffic == 100:
            split = f"all traffic (promoted over v{old})"
        elif old != self.version.version:
            split = (
                f"canary, {self.traffic}% of traffic; v{old} keeps the rest until "
                "`digits deploy --promote`"
            )
        else:
            split = f"already served, its {self.traffic}% canary share unchanged"
        done = f"; {self.action}" if self.action else ""
        return f"{self.version.description} -> {where}: {split}{done}"


def deploy(
    model_uri: str,
    tracking_uri: str,
    settings: DeploySettings | None = None,
    promote: bool = False,
    current_version: str | None = None,
    apply: bool = False,
    api_client=None,
) -> DeployOutcome:
    """Pin ``model_uri`` to its version, render the InferenceService and, with ``apply``, create
    or patch it (reading the existing one first to decide on a canary).

    Raises:
        RegistryLookupError: the URI names no registered version.
        ServingError: the Kubernetes API refused or is unreachable.
    """
    from digits.registry import resolve_version

    settings = settings or DeploySettings()
    version = resolve_version(model_uri, tracking_uri)
    existing = None
    current = Deployed(current_version, None) if current_version else None
    if apply:
        api_client = api_client or kube_api_client()
        existing = read_inference_service(settings.name, settings.namespace, api_client)
        current = deployed_from(existing)
    service = render_inference_service(version, settings, current, promote)
    action = (
        apply_inference_service(service, exists=existing is not None, api_client=api_client)
        if apply
        else None
    )
    return DeployOutcome(service, version, current, action)
