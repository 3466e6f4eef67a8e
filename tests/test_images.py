"""The container images, built and run for real: skipped where no Docker daemon answers."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from digits.local_run import sample_data

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "debian:bookworm-slim"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _docker_client() -> str:
    """A docker CLI that reaches a daemon and can build with BuildKit (RUN --mount), or skip."""
    candidates = [shutil.which("docker"), "/usr/bin/docker"]
    reasons = []
    for docker in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
        if info.returncode != 0:
            error = (info.stderr.strip().splitlines() or ["no output"])[0]
            reasons.append(f"`{docker} info` failed ({error})")
            continue
        if subprocess.run([docker, "buildx", "version"], capture_output=True).returncode == 0:
            return docker
        # Clients before 23 build with BuildKit through DOCKER_BUILDKIT=1, without buildx.
        version = subprocess.run(
            [docker, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return docker
        reasons.append(f"{docker} {version} has no buildx plugin for BuildKit")
    pytest.skip(f"no Docker daemon with BuildKit: {'; '.join(reasons) or 'no docker CLI'}")


@pytest.fixture(scope="module")
def cpu_image():
    docker = _docker_client()
    if subprocess.run([docker, "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        pull = subprocess.run([docker, "pull", BASE_IMAGE], capture_output=True, timeout=600)
        if pull.returncode:
            pytest.skip(
                f"{BASE_IMAGE} is not present and cannot be pulled: "
                "build it with `sudo bash scripts/make_base_image.sh`"
            )
    tag = "digits-pipeline:pytest"
    build = [docker, "build", "-f", "docker/Dockerfile", "--target", "cpu", "-t", tag]
    if HOST_CA_BUNDLE.is_file():
        build += ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"]
    built = subprocess.run(
        [*build, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=3000,
    )
    assert built.returncode == 0, f"docker build failed:\n{(built.stdout + built.stderr)[-4000:]}"
    yield docker, tag
    subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True, timeout=120)


def test_python3_on_path_is_the_projects_venv_as_uid_1000(cpu_image):
    docker, tag = cpu_image
    # The shape of command KFP runs: `sh -c` resolving `python3` from PATH.
    script = (
        "import os, sys, digits.components.train_model, kfp, keras; "
        "print(sys.prefix, os.getuid(), keras.backend.backend())"
    )
    ran = subprocess.run(
        [docker, "run", "--rm", tag, "sh", "-c", f"python3 -c {shlex.quote(script)}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split()[-3:] == ["/opt/venv", "1000", "tensorflow"], ran.stdout


def test_whole_pipeline_runs_in_the_image_through_kfp_docker_runner(
    cpu_image, tmp_path, mlflow_server
):
    from kfp import local

    from digits.pipelines.digits_pipeline import ClusterSettings, build_pipeline

    _, tag = cpu_image
    # DockerRunner mounts only the pipeline root, so the inputs live inside it.
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    pd.read_csv(sample_data("train.csv.gz")).head(300).to_csv(root / "data/train.csv", index=False)
    pd.read_csv(sample_data("test.csv.gz")).head(40).to_csv(root / "data/test.csv", index=False)
    local.init(
        # The host's uid owns the mounted root; host networking reaches MLflow on 127.0.0.1.
        runner=local.DockerRunner(network_mode="host", user=f"{os.getuid()}:{os.getgid()}"),
        pipeline_root=str(root),
    )
    pipeline = build_pipeline(ClusterSettings(image=tag, train_image=tag))
    run = pipeline(
        train_data_uri=str(root / "data/train.csv"),
        predict_data_uri=str(root / "data/test.csv"),
        mlflow_tracking_uri=mlflow_server,
        experiment_name="test-images",
        registered_model_name="test-images-model",
        epochs=1,
    )

    # kfp.local can report a fast-failing container as a success: check what tasks wrote.
    submission = pd.read_csv(run.outputs["submission"].path)
    assert submission["ImageId"].tolist() == list(range(1, 41))
    assert (Path(run.outputs["model"].path) / "model.keras").is_file()
    version = MlflowClient(mlflow_server).get_model_version(
        "test-images-model", run.outputs["model_version"]
    )
    assert version.run_id == run.outputs["mlflow_run_id"]
