"""The Kubernetes manifests in manifests/ (kfp, mlflow, gpu-pool, kind), checked offline.

Objects are validated against the Kubernetes schema (kubernetes-validate, strict); every
kustomization without a remote base is rendered with `kubectl kustomize`. kfp/'s bases are
remote (github.com/kubeflow/pipelines at a release tag): rendering them clones that repository,
which needs the network, so here they are only checked to be pinned to a release.
"""

import configparser
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from digits.config import DEFAULT_MLFLOW_URI
from digits.pipelines.digits_pipeline import ClusterSettings

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
MLFLOW = MANIFESTS / "mlflow"
SECRET_TEMPLATES = MLFLOW / "secrets"
KIND_CONFIG = MANIFESTS / "kind" / "cluster.yaml"
# The oldest Kubernetes minor whose schema `kubernetes-validate>=1.30` (the `test` extra) is sure
# to ship; the objects are also checked against the newest one the installed package ships.
OLDEST_KUBERNETES = "1.30"
# Fields of a kustomize.config.k8s.io/v1beta1 Kustomization that these manifests may use.
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "components",
    "patches",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "images",
    "replacements",
}
KFP_RELEASE_BASE = "github.com/kubeflow/pipelines/manifests/kustomize/"
PLACEHOLDER = "REPLACE_ME"


# ---- helpers ------------------------------------------------------------------------------------


def _kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in MANIFESTS.rglob("kustomization.yaml"))


def _kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _is_remote(resource: str) -> bool:
    return "://" in resource or resource.startswith(("github.com/", "git@"))


def _has_remote_base(directory: Path) -> bool:
    return any(_is_remote(r) for r in _kustomization(directory).get("resources", []))


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _resource_files(directory: Path) -> list[Path]:
    """The files a local kustomization lists, following listed directories."""
    files = []
    for resource in _kustomization(directory).get("resources", []):
        target = (directory / resource).resolve()
        files += _resource_files(target) if target.is_dir() else [target]
    return files


def _raw_objects() -> list[tuple[Path, dict]]:
    """Every Kubernetes object in a file that a kustomization lists, plus the Secret templates."""
    files = {
        path
        for directory in _kustomization_dirs()
        if not _has_remote_base(directory)
        for path in _resource_files(directory)
    }
    files |= set(SECRET_TEMPLATES.glob("*.yaml"))
    return [(path, obj) for path in sorted(files) for obj in _load(path)]


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: install kubectl >= 1.27 to render the kustomizations")
    return kubectl


def _render(directory: Path) -> list[dict]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def _find(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _base_objects() -> list[dict]:
    return [obj for _, obj in _raw_objects() if obj["kind"] != "Secret"]


def _mlflow_container(objects: list[dict]) -> dict:
    (container,) = _find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    return container


def _option(arguments: list[str], flag: str) -> str:
    assert arguments.count(flag) == 1, f"{flag} should appear once in {arguments}"
    return arguments[arguments.index(flag) + 1]


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _secret_key(env_item: dict) -> tuple[str, str]:
    ref = env_item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def _containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def _secret_refs(objects: list[dict]) -> set[tuple[str, str]]:
    """(Secret name, key) of every secretKeyRef in the pods of ``objects``."""
    return {
        _secret_key(item)
        for _, pod in _pod_specs(objects)
        for container in _containers(pod)
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def _service_host(service: dict) -> str:
    return f"{service['metadata']['name']}.mlflow.svc.cluster.local"


# ---- schema and rendering -----------------------------------------------------------------------


def test_every_object_validates_strictly_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (part of the `test` extra)"
    )
    newest = ".".join(str(kubernetes_validate.latest_version()).split(".")[:2])
    objects = _raw_objects()
    if shutil.which("kubectl"):
        objects += [
            (directory / "kustomization.yaml", obj)
            for directory in _kustomization_dirs()
            if not _has_remote_base(directory)
            for obj in _render(directory)
        ]
    assert len(objects) > 10, "expected the mlflow and gpu-pool objects"
    errors = []
    for kubernetes_version in sorted({OLDEST_KUBERNETES, newest}):
        for path, obj in objects:
            where = f"{path.relative_to(ROOT)} {obj['kind']}/{obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as error:
                field = ".".join(str(part) for part in error.absolute_path) or "<root>"
                message = error.message.splitlines()[0]
                errors.append(f"{where} (Kubernetes {kubernetes_version}) at {field}: {message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "directory",
    [d for d in _kustomization_dirs() if not _has_remote_base(d)],
    ids=lambda d: d.relative_to(MANIFESTS).as_posix(),
)
def test_local_kustomization_renders_offline(directory):
    objects = _render(directory)
    assert objects, f"{directory} renders nothing"
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets come from secrets/ only"


@pytest.mark.parametrize(
    "directory", _kustomization_dirs(), ids=lambda d: d.relative_to(MANIFESTS).as_posix()
)
def test_kustomization_is_well_formed_and_lists_files_that_exist(directory):
    kustomization = _kustomization(directory)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= KUSTOMIZATION_FIELDS, set(kustomization) - KUSTOMIZATION_FIELDS
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), f"duplicate resources: {resources}"
    for resource in resources:
        if not _is_remote(resource):
            assert (directory / resource).exists(), f"{directory}: {resource} does not exist"
    for generator in kustomization.get("configMapGenerator", []):
        for file in generator.get("files", []):
            assert (directory / file).is_file(), f"{directory}: {file} does not exist"


def test_every_manifest_file_is_used_by_a_kustomization():
    local = [d for d in _kustomization_dirs() if not _has_remote_base(d)]
    used = {path for directory in local for path in _resource_files(directory)}
    loose = {
        path
        for path in MANIFESTS.rglob("*.yaml")
        if path.name != "kustomization.yaml"
        and path.parent != SECRET_TEMPLATES
        and path != KIND_CONFIG
    }
    assert loose <= used, f"manifest files no kustomization lists: {sorted(loose - used)}"


def test_kfp_is_pinned_to_a_kubeflow_pipelines_release_matching_the_sdk():
    """Remote bases cannot render offline; check they name a release tag, not a branch."""
    sdk_major, sdk_minor = version("kfp").split(".")[:2]
    refs = {}
    for directory in (MANIFESTS / "kfp", MANIFESTS / "kfp" / "cluster-scoped"):
        (resource,) = _kustomization(directory)["resources"]
        assert resource.startswith(KFP_RELEASE_BASE), resource
        match = re.fullmatch(r"[^?]+\?ref=(\d+)\.(\d+)\.(\d+)", resource)
        assert match, f"{resource} should be pinned by ?ref=MAJOR.MINOR.PATCH (a release tag)"
        refs[directory.name] = match.groups()
    assert len(set(refs.values())) == 1, f"kfp/ and kfp/cluster-scoped/ differ: {refs}"
    major, minor, _ = next(iter(refs.values()))
    assert (major, minor) == (sdk_major, sdk_minor), "KFP backend and SDK should share a minor"
    assert _kustomization(MANIFESTS / "kfp")["resources"][0].startswith(
        KFP_RELEASE_BASE + "env/platform-agnostic?"
    ), "the standalone install"


# ---- MLflow -------------------------------------------------------------------------------------


def test_default_mlflow_uri_is_the_mlflow_services_cluster_address():
    service = _find(_base_objects(), "Service", "mlflow")
    (port,) = service["spec"]["ports"]
    assert f"http://{_service_host(service)}:{port['port']}" == DEFAULT_MLFLOW_URI


def test_everything_lands_in_the_restricted_mlflow_namespace():
    objects = _render(MLFLOW)
    namespace = _find(objects, "Namespace", "mlflow")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "mlflow", obj["metadata"]["name"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "digits"


def test_mlflow_server_uses_postgres_and_proxies_artifacts_to_the_created_bucket():
    objects = _base_objects()
    container = _mlflow_container(objects)
    arguments = container["args"]
    assert container["command"] == ["mlflow", "server"]

    backend = urlsplit(_option(arguments, "--backend-store-uri"))
    postgres = _find(objects, "Service", "postgres")
    # The driver is explicit: SQLAlchemy 2.1 changed the default of a bare postgresql://.
    assert backend.scheme == "postgresql+psycopg"
    assert backend.password is None, "the password comes from PGPASSWORD, not the command line"
    assert (backend.hostname, backend.port) == (
        _service_host(postgres),
        postgres["spec"]["ports"][0]["port"],
    )
    (postgres_container,) = _find(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"][
        "containers"
    ]
    postgres_env = _env(postgres_container)
    assert backend.username == postgres_env["POSTGRES_USER"]["value"]
    assert backend.path == "/" + postgres_env["POSTGRES_DB"]["value"]
    mlflow_env = _env(container)
    assert _secret_key(mlflow_env["PGPASSWORD"]) == _secret_key(postgres_env["POSTGRES_PASSWORD"])

    assert "--serve-artifacts" in arguments and "--default-artifact-root" not in arguments
    destination = urlsplit(_option(arguments, "--artifacts-destination"))
    assert destination.scheme == "s3"
    (bucket_container,) = _find(objects, "Job", "mlflow-bucket")["spec"]["template"]["spec"][
        "containers"
    ]
    bucket_env = _env(bucket_container)
    assert destination.hostname == bucket_env["BUCKET"]["value"]
    seaweedfs = _find(objects, "Service", "seaweedfs")
    s3_endpoint = f"http://{_service_host(seaweedfs)}:{seaweedfs['spec']['ports'][0]['port']}"
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"]["value"] == s3_endpoint
    assert bucket_env["S3_ENDPOINT_URL"]["value"] == s3_endpoint
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert _secret_key(mlflow_env[name]) == _secret_key(bucket_env[name])


def test_mlflow_server_listens_on_the_port_its_service_and_probes_use():
    objects = _base_objects()
    container = _mlflow_container(objects)
    assert _option(container["args"], "--host") == "0.0.0.0"
    listen_port = int(_option(container["args"], "--port"))
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _find(objects, "Service", "mlflow")
    (port,) = service["spec"]["ports"]
    assert named_ports[port["targetPort"]] == listen_port
    pod_labels = _find(objects, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health", probe
        assert named_ports[check["port"]] == listen_port, probe


def test_mlflow_allowed_hosts_accept_the_pipelines_tracking_uri_and_port_forwards():
    security_utils = pytest.importorskip("mlflow.server.security_utils")
    objects = _base_objects()
    allowed = _option(_mlflow_container(objects)["args"], "--allowed-hosts").split(",")
    (port,) = _find(objects, "Service", "mlflow")["spec"]["ports"]
    # The Host header an HTTP client sends for the default URI, the Service's shorter names,
    # and `kubectl port-forward` on any local port.
    hosts = [urlsplit(DEFAULT_MLFLOW_URI).netloc, "localhost:15000", "127.0.0.1:5000"] + [
        f"{host}:{port['port']}" for host in ("mlflow", "mlflow.mlflow", "mlflow.mlflow.svc")
    ]
    for host in hosts:
        assert security_utils.is_allowed_host_header(allowed, host), host
    assert not security_utils.is_allowed_host_header(allowed, "evil.example.com:5000")


def test_mlflow_image_is_the_official_full_variant_of_the_client_version():
    objects = _base_objects()
    expected = f"ghcr.io/mlflow/mlflow:v{version('mlflow')}-full"
    assert _mlflow_container(objects)["image"] == expected
    for _, pod in _pod_specs(objects):
        for container in _containers(pod):
            words = container.get("command", []) + container.get("args", [])
            assert not any("pip" in word.split() for word in words), "no installs at start"


def test_every_image_is_pinned_to_a_release_tag():
    objects = _base_objects()
    for where, pod in _pod_specs(objects):
        for container in _containers(pod):
            image = container["image"]
            tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert re.search(r"\d", tag) and tag != "latest", f"{where}: {image} is not pinned"


def test_mlflow_namespace_pods_are_non_root_without_privileges_and_bounded():
    for where, pod in _pod_specs(_base_objects()):
        if where.startswith("DaemonSet/"):
            continue  # the GPU pool's device plugin runs in kube-system
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] > 0, where
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for container in _containers(pod):
            name = f"{where} {container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), name


def test_long_running_servers_have_probes():
    for where, pod in _pod_specs(_base_objects()):
        if where.startswith(("Job/", "DaemonSet/")):
            continue
        for container in pod["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where} {container['name']} has no {probe}"


def test_stores_keep_their_data_on_persistent_volumes():
    objects = _base_objects()
    postgres = _find(objects, "StatefulSet", "postgres")
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert _env(container)["PGDATA"]["value"].startswith(mount["mountPath"] + "/")
    assert postgres["spec"]["serviceName"] == "postgres"

    seaweedfs = _find(objects, "Deployment", "seaweedfs")
    pod = seaweedfs["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    pvc = _find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # One pod on a ReadWriteOnce volume: the old one must be gone before the new one starts.
    assert seaweedfs["spec"]["replicas"] == 1
    assert seaweedfs["spec"]["strategy"]["type"] == "Recreate"
    (server,) = pod["containers"]
    (data,) = [m for m in server["volumeMounts"] if m["name"] == volume["name"]]
    assert f"-dir={data['mountPath']}" in server["args"]


def test_stores_accept_traffic_only_from_mlflow():
    objects = _base_objects()
    for store, allowed in (("postgres", {"mlflow"}), ("seaweedfs", {"mlflow", "mlflow-bucket"})):
        policy = _find(objects, "NetworkPolicy", store)
        assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": store}
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        selector = peer["podSelector"]
        names = set(
            selector.get("matchLabels", {}).values()
            or next(e["values"] for e in selector["matchExpressions"])
        )
        assert names == allowed, store


def test_secret_templates_hold_only_placeholders_and_every_key_the_pods_read():
    templates = {}
    for path in sorted(SECRET_TEMPLATES.glob("*.yaml")):
        (secret,) = _load(path)
        assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "mlflow"
        assert "data" not in secret, f"{path.name}: use stringData placeholders"
        assert set(secret["stringData"].values()) == {PLACEHOLDER}, f"{path.name}: real value?"
        assert f"create secret generic {secret['metadata']['name']}" in path.read_text()
        templates[secret["metadata"]["name"]] = set(secret["stringData"])
    read = _secret_refs(_base_objects()) | _secret_refs(_render(MLFLOW / "basic-auth"))
    defined = {(name, key) for name, keys in templates.items() for key in keys}
    assert read == defined, f"read but not templated: {read - defined}; unused: {defined - read}"


def test_basic_auth_overlay_turns_on_the_auth_app_with_secrets_from_kubernetes():
    objects = _render(MLFLOW / "basic-auth")
    container = _mlflow_container(objects)
    assert _option(container["args"], "--app-name") == "basic-auth"
    env = _env(container)
    assert _secret_key(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) == ("mlflow-basic-auth", "admin-password")
    assert _secret_key(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == (
        "mlflow-basic-auth",
        "flask-secret-key",
    )
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    pod = _find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = _find(objects, "ConfigMap", volume["configMap"]["name"])

    ini = configparser.ConfigParser()
    ini.read_string(config_map["data"][config_path.name])
    database = urlsplit(ini["mlflow"]["database_uri"])
    backend = urlsplit(_option(container["args"], "--backend-store-uri"))
    assert database.password is None, "no password in the ConfigMap"
    assert (database.scheme, database.netloc, database.path) == (
        backend.scheme,
        backend.netloc,
        backend.path,
    )
    assert ini["mlflow"]["admin_username"] and "admin_password" not in ini["mlflow"]
    assert ini["mlflow"]["default_permission"] == "READ"
    # The same server otherwise: the overlay only adds to the base.
    base_arguments = _mlflow_container(_base_objects())["args"]
    assert container["args"][: len(base_arguments)] == base_arguments


# ---- GPU pool and kind --------------------------------------------------------------------------


def _toleration_matches(toleration: dict, key: str, effect: str) -> bool:
    return (
        toleration["key"] == key
        and toleration.get("operator") == "Exists"
        and toleration.get("effect") in (None, effect)
    )


def test_device_plugin_runs_on_exactly_the_pool_the_training_task_selects():
    settings = ClusterSettings()
    (daemonset,) = [o for o in _render(MANIFESTS / "gpu-pool") if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == settings.gpu_node_selector
    for wanted in settings.gpu_tolerations:
        assert any(_toleration_matches(t, wanted.key, wanted.effect) for t in pod["tolerations"]), (
            wanted
        )
    (container,) = pod["containers"]
    assert re.fullmatch(r"nvcr\.io/nvidia/k8s-device-plugin:v\d+\.\d+\.\d+", container["image"])


def test_kind_cluster_has_a_control_plane_a_cpu_worker_and_a_tainted_gpu_worker():
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    allowed_node_fields = {"role", "labels", "kubeadmConfigPatches", "image", "extraPortMappings"}
    for node in config["nodes"]:
        assert set(node) <= allowed_node_fields, set(node) - allowed_node_fields
        assert node["role"] in {"control-plane", "worker"}
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") == 2

    settings = ClusterSettings()
    selector = settings.gpu_node_selector
    gpu_workers = [
        n for n in config["nodes"] if selector.items() <= (n.get("labels") or {}).items()
    ]
    assert len(gpu_workers) == 1 and gpu_workers[0]["role"] == "worker"
    (gpu_worker,) = gpu_workers
    (patch,) = [yaml.safe_load(p) for p in gpu_worker["kubeadmConfigPatches"]]
    assert patch["kind"] == "JoinConfiguration"
    taints = patch["nodeRegistration"]["taints"]
    assert taints, "the GPU worker must be tainted"
    for taint in taints:
        assert set(taint) <= {"key", "value", "effect"}, taint
        assert taint["effect"] in {"NoSchedule", "PreferNoSchedule", "NoExecute"}, taint
        # Every taint of the pool must be tolerated by the training task, or it never schedules.
        assert any(
            _toleration_matches(
                {"key": t.key, "operator": t.operator, "effect": t.effect},
                taint["key"],
                taint["effect"],
            )
            for t in settings.gpu_tolerations
        ), taint
    cpu_workers = [n for n in config["nodes"] if n["role"] == "worker" and n is not gpu_worker]
    assert all("kubeadmConfigPatches" not in n for n in cpu_workers), "CPU worker is untainted"
