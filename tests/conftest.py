"""Shared fixtures: small real slices of the bundled MNIST sample, a trained model, MLflow."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from digits.config import TrainConfig
from digits.data import sample_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sample_train() -> pd.DataFrame:
    """The bundled labeled sample (8,000 real MNIST digits)."""
    return pd.read_csv(sample_data("train.csv.gz"))


@pytest.fixture(scope="session")
def train_csv(tmp_path_factory, sample_train) -> Path:
    """First 400 labeled rows, gzipped like Kaggle downloads are."""
    path = tmp_path_factory.mktemp("data") / "train.csv.gz"
    sample_train.head(400).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def test_csv(tmp_path_factory) -> Path:
    """First 60 unlabeled rows of the bundled test.csv."""
    path = tmp_path_factory.mktemp("data") / "test.csv"
    pd.read_csv(sample_data("test.csv.gz")).head(60).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def split_sets(tmp_path_factory, train_csv) -> tuple[Path, Path]:
    """(train.npz, validation.npz) made by the real ingest -> validate -> split steps."""
    from digits.components.ingest_csv import ingest_csv
    from digits.components.normalize_and_split import normalize_and_split
    from digits.components.validate_data import validate_data

    work = tmp_path_factory.mktemp("split")
    ingest_csv(str(train_csv), work / "dataset")
    validate_data(
        work / "dataset",
        work / "valid.parquet",
        work / "rejected.parquet",
        work / "report.json",
        source=str(train_csv),
        require_label=True,
    )
    normalize_and_split(
        work / "valid.parquet", work / "train.npz", work / "validation.npz", 0.25, seed=2
    )
    return work / "train.npz", work / "validation.npz"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, split_sets) -> tuple[Path, Path]:
    """(model dir, history path) after one real epoch on the small slice."""
    from digits.components.train_model import train_model

    work = tmp_path_factory.mktemp("trained")
    train_path, validation_path = split_sets
    train_model(
        train_path,
        validation_path,
        work / "model",
        work / "history.json",
        TrainConfig(epochs=1, batch_size=32),
    )
    return work / "model", work / "history.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, local proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115  (kept open for the server's life)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture
def experiment_name(request) -> str:
    """A unique MLflow experiment per test, so tests never see each other's runs."""
    return f"test-{request.node.name}-{time.time_ns()}"


@pytest.fixture
def kfp_server():
    """A recording fake of the KFP v2beta1 API on 127.0.0.1 (tests/kfp_recorder.py)."""
    import kfp_recorder

    with kfp_recorder.running() as kfp:
        yield kfp


@pytest.fixture(scope="session")
def package(tmp_path_factory):
    """The pipeline compiled with the default settings."""
    from digits.pipelines.digits_pipeline import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("package") / "pipeline.yaml")


# The files that take longest (`pytest --durations`, summed per file), longest first. With two
# workers (`-n 2 --dist loadfile --no-loadscope-reorder`) they start first and alternate between
# the workers, and the many short files fill in after, so no long file starts last and runs alone.
LONGEST_FILES = (  # measured from a clean clone, 2 cores: seconds of the file's slowest tests
    "test_images.py",  # 193 (the CPU image build, the pipeline in Docker)
    "test_local_pipeline.py",  # 173
    "test_promotion_race.py",  # 172
    "test_local_cache.py",  # 122
    "test_sweep_pipeline.py",  # 115
    "test_train_model.py",  # 71
    "test_resume.py",  # 70
    "test_serve.py",  # 41
    "test_cli.py",  # 37
    "test_register_model.py",  # 33
    "test_pipeline_compile.py",  # 30
    "test_progress.py",  # 29
    "test_run_rejects_malformed.py",  # 29
    "test_batch_predict.py",  # 28
    "test_submit.py",  # 24
)


def pytest_collection_modifyitems(items):
    """The longest files first, in LONGEST_FILES' order; the rest and each file's order kept."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
