"""The container images, built and run for real, and `digits run --runner docker`.

The docker-marked tests skip, saying why, where no Docker daemon with BuildKit answers; as root on
Debian `bash scripts/bootstrap.sh test` installs and starts one (scripts/start_docker.sh). The GPU
image is large (several GB): its test runs only with DIGITS_TEST_GPU_IMAGE=1 (`-m gpu_image`).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from digits.app.cli import app
from digits.app.docker_runner import DockerSettings, docker_runner
from digits.data import sample_data
from digits.errors import DockerRunError

ROOT = Path(__file__).resolve().parents[1]
TAG = "pytest"  # scripts/build_images.sh --tag: digits-pipeline:pytest, digits-pipeline:pytest-gpu
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"


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


def _build(docker: str, target: str) -> str:
    """Build one target with scripts/build_images.sh; its printed arguments name the image."""
    built = subprocess.run(
        ["bash", "scripts/build_images.sh", "--tag", TAG, "--target", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER": docker},
        timeout=3000,
    )
    output = built.stdout + built.stderr
    if "cannot be pulled" in output:
        pytest.skip(output.strip().splitlines()[-1])
    assert built.returncode == 0, f"build_images.sh failed:\n{output[-4000:]}"
    option = "--image" if target == "cpu" else "--train-image"
    image = f"digits-pipeline:{TAG}" + ("-gpu" if target == "gpu" else "")
    assert f"{option} {image}" in built.stdout, built.stdout
    image_id = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True
    ).stdout.strip()
    assert re.search(rf"{re.escape(image)}\s+{image_id}", built.stdout), built.stdout
    return image


def _run_in(docker: str, image: str, script: str) -> str:
    """stdout of ``python3 -c script`` in ``image``, started the way KFP starts a task."""
    ran = subprocess.run(
        [docker, "run", "--rm", image, "sh", "-c", f"python3 -c {shlex.quote(script)}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


@pytest.fixture(scope="module")
def cpu_image():
    docker = _docker_client()
    image = _build(docker, "cpu")
    yield docker, image
    subprocess.run([docker, "image", "rm", "-f", image], capture_output=True, timeout=120)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_python3_on_path_is_the_projects_slimmed_venv_as_uid_1000(cpu_image):
    docker, image = cpu_image
    script = (
        "import os, sys, digits.components.train_model, kfp, keras; "
        f"print(os.path.isdir('{SITE_PACKAGES}/tensorflow/include'), "
        f"os.path.isdir('{SITE_PACKAGES}/pandas/tests'), "
        "sys.prefix, os.getuid(), keras.backend.backend())"
    )
    assert _run_in(docker, image, script).split()[-5:] == [
        "False",  # docker/slim_venv.sh removed TensorFlow's headers
        "False",  # and the packages' test suites
        "/opt/venv",
        "1000",
        "tensorflow",
    ]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_image_knows_the_commit_it_was_built_from(cpu_image):
    docker, image = cpu_image
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:
        pytest.skip("not a git checkout: build_images.sh passes no commit")
    script = "from digits.tracking import git_commit; print(git_commit())"
    assert _run_in(docker, image, script).split()[-1] == head  # tagged on every MLflow run


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_digits_run_runner_docker_runs_the_whole_pipeline_in_the_image(cpu_image, tmp_path):
    _, image = cpu_image
    # Inputs outside the pipeline root: `--runner docker` mounts them at the same paths.
    data = tmp_path / "data"
    data.mkdir()
    pd.read_csv(sample_data("train.csv.gz")).head(300).to_csv(data / "train.csv", index=False)
    pd.read_csv(sample_data("test.csv.gz")).head(40).to_csv(data / "test.csv", index=False)
    labels = pd.read_csv(sample_data("test_labels.csv.gz")).head(40)
    labels.to_csv(data / "labels.csv", index=False)
    summary_path = tmp_path / "summary.json"

    result = CliRunner().invoke(
        app,
        [
            "run", "--runner", "docker", "--image", image,
            "--data", str(data / "train.csv"), "--predict-data", str(data / "test.csv"),
            "--predict-labels", str(data / "labels.csv"), "--epochs", "1",
            "--output-dir", str(tmp_path / "out"), "--experiment", "test-images",
            "--model-name", "test-images-model", "--summary-json", str(summary_path),
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    summary = json.loads(summary_path.read_text())
    # kfp.local can report a fast-failing container as a success: check what the tasks wrote.
    submission = pd.read_csv(summary["predictions_path"])
    assert submission["ImageId"].tolist() == labels["ImageId"].tolist()
    assert Path(summary["model_path"]).is_file()
    # The default MLflow store (SQLite under --output-dir) was written from inside the containers.
    assert summary["mlflow_tracking_uri"].startswith("sqlite:///")
    store = summary["mlflow_tracking_uri"]
    version = MlflowClient(store, registry_uri=store).get_model_version(
        "test-images-model", summary["model_version"]
    )
    assert version.run_id == summary["mlflow_run_id"]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_gpus_all_requests_every_gpu_or_says_that_docker_cannot_pass_them(cpu_image):
    docker, image = cpu_image
    settings = DockerSettings(image=image, train_image=image, gpus="all")
    passthrough = subprocess.run(
        [docker, "run", "--rm", "--gpus", "all", image, "true"], capture_output=True, timeout=300
    )
    if passthrough.returncode == 0:
        runner, cluster = docker_runner(settings, paths=[])
        (request,) = runner.container_run_args["device_requests"]
        assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
        assert (cluster.image, cluster.train_image) == (image, image)
    else:  # no NVIDIA Container Toolkit (or no GPU): one clear line instead of a failed task
        with pytest.raises(DockerRunError, match=r"^--gpus all: .*NVIDIA Container Toolkit"):
            docker_runner(settings, paths=[])


@pytest.mark.docker
def test_runner_docker_names_the_missing_image_and_how_to_build_it(tmp_path):
    _docker_client()
    result = CliRunner().invoke(
        app,
        ["run", "--runner", "docker", "--image", "digits-pipeline:no-such-tag",
         "--output-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "digits run: --runner docker: image digits-pipeline:no-such-tag is not in the local "
        "Docker daemon; build it with scripts/build_images.sh"
    )


def test_runner_docker_without_a_daemon_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    result = CliRunner().invoke(app, ["run", "--runner", "docker", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("digits run: --runner docker: no Docker daemon answers")
    assert "scripts/start_docker.sh" in line


def test_docker_only_options_are_refused_without_runner_docker(tmp_path):
    result = CliRunner().invoke(app, ["run", "--gpus", "all", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--runner docker" in result.output


@pytest.mark.gpu_image
@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(5400)
@pytest.mark.skipif(
    os.environ.get("DIGITS_TEST_GPU_IMAGE") != "1",
    reason="the GPU image is several GB: set DIGITS_TEST_GPU_IMAGE=1 to build and check it",
)
def test_gpu_image_builds_with_a_cuda_tensorflow_and_loadable_cuda_libraries():
    docker = _docker_client()
    image = _build(docker, "gpu")
    # No GPU is needed to load the CUDA user-space libraries the wheels ship.
    script = (
        "import ctypes, glob, os, sys, tensorflow as tf, digits.components.train_model; "
        "info = tf.sysconfig.get_build_info(); "
        "site = os.path.dirname(os.path.dirname(tf.__file__)); "
        "libs = [glob.glob(f'{site}/nvidia/{lib}/lib/lib{lib}.so.*')[0] "
        "        for lib in ('cublas', 'cudnn', 'cufft', 'cusolver', 'cusparse')]; "
        "[ctypes.CDLL(lib) for lib in libs]; "
        "print(info['is_cuda_build'], len(libs), os.getuid())"
    )
    try:
        assert _run_in(docker, image, script).split()[-3:] == ["True", "5", "1000"]
    finally:
        subprocess.run([docker, "image", "rm", "-f", image], capture_output=True, timeout=120)
