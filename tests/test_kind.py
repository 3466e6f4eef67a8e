"""scripts/kind-e2e.sh: the pipeline on a local kind cluster, and the script's own lint.

The end-to-end run needs kind, kubectl, a Docker daemon and network access (kind's node image,
KFP's manifests and images); it skips, saying which is missing, where they are not.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kind-e2e.sh"
# Cluster creation, the KFP install, two image builds and a one-epoch run.
E2E_TIMEOUT_S = 90 * 60


def _missing_for_kind() -> str | None:
    """Why the kind run cannot happen here, or None when it can."""
    for tool in ("kind", "kubectl", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH"
    try:
        subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=True)
    except (subprocess.SubprocessError, OSError):
        return "no Docker daemon answers `docker info`"
    return None


def test_kind_e2e_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not on PATH (Debian: apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.kind
@pytest.mark.slow
def test_pipeline_runs_on_kind_with_training_on_the_gpu_pool_and_the_champion_in_mlflow():
    missing = _missing_for_kind()
    if missing:
        pytest.skip(f"kind e2e needs kind, kubectl and a Docker daemon: {missing}")
    result = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=E2E_TIMEOUT_S
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "kind-e2e: passed" in result.stderr
