"""kfp.local's task cache switched on, as a cluster caches: content, not the path, decides.

Two `digits run` into one output folder (one cache) and one MLflow server. Between them
train.csv is overwritten in place with other rows and test.csv is left alone: the second run
reads, validates, splits and trains on the new train.csv and registers a new, different model,
and reuses test.csv's ingest and validation from the cache.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from digits.data import sample_data

pytestmark = pytest.mark.slow

DIGITS = str(Path(sys.executable).with_name("digits"))
MODEL = "test-local-cache-model"


def _run(work: Path, train_csv: Path, test_csv: Path, mlflow_server: str, *extra: str):
    result = subprocess.run(
        [
            DIGITS, "run",
            "--data", str(train_csv),
            "--predict-data", str(test_csv),
            "--output-dir", str(work),
            "--mlflow-uri", mlflow_server,
            "--experiment", "test-local-cache",
            "--model-name", MODEL,
            "--epochs", "1",
            "--no-baseline",
            "--summary-json", str(work / "summary.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [line for line in result.stdout.splitlines() if line[:2] in ("✓ ", "↺ ")]
    return steps, json.loads((work / "summary.json").read_text())


def _marks(steps: list[str], title: str) -> list[str]:
    """How each step called ``title`` ended: ✓ ran, ↺ reused from the cache (sorted)."""
    return sorted(line[0] for line in steps if line.split()[1] == title)


def _ran(steps: list[str], title: str, source: str) -> bool:
    return any(line.startswith(f"✓ {title} ") and f" {source}:" in line for line in steps)


def _weights_digest(summary: dict) -> str:
    return hashlib.sha256(Path(summary["model_path"]).read_bytes()).hexdigest()


def test_cache_follows_the_content_behind_the_path(tmp_path, sample_train, mlflow_server):
    train_csv, test_csv, work = tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "out"
    sample_train.head(300).to_csv(train_csv, index=False)
    pd.read_csv(sample_data("test.csv.gz")).head(40).to_csv(test_csv, index=False)

    first, first_summary = _run(work, train_csv, test_csv, mlflow_server)
    assert _marks(first, "ingest") == _marks(first, "validate") == ["✓", "✓"], first

    sample_train.iloc[300:600].to_csv(train_csv, index=False)  # same path, other rows
    # As a scheduled run of an uploaded version would be (KFP fills these on a cluster).
    origin = ("--param", "schedule_name=nightly", "--param", "pipeline_version=0.2.0-3f2c1ab")
    second, second_summary = _run(work, train_csv, test_csv, mlflow_server, *origin)

    # The changed file is read, validated, split and trained on again...
    assert _ran(second, "ingest", "train.csv") and _ran(second, "validate", "train.csv"), second
    assert _marks(second, "split") == _marks(second, "train") == ["✓"]
    # ...the unchanged one is reused, and the fingerprints, which decide, always run.
    assert _marks(second, "ingest") == _marks(second, "validate") == ["↺", "✓"], second
    assert not _ran(second, "ingest", "test.csv")
    assert _marks(second, "fingerprint") == ["✓", "✓"]

    assert first_summary["model_version"] != second_summary["model_version"]
    assert _weights_digest(second_summary) != _weights_digest(first_summary)
    newest = sorted((work / "pipeline_root").iterdir())[-1]
    source = json.loads((newest / "ingest-csv" / "dataset" / "source.json").read_text())
    assert source["sha256"] == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert source["fingerprint"] == f"sha256:{source['sha256']}"

    # The schedule and the version are on the MLflow run and the model version; kfp.local leaves
    # the schedule-time placeholder unresolved, so that tag is absent.
    client = MlflowClient(mlflow_server)
    run = client.get_run(second_summary["mlflow_run_id"])
    version = client.get_model_version(MODEL, second_summary["model_version"])
    for tags in (run.data.tags, version.tags):
        assert tags["kfp_schedule"] == "nightly" and tags["kfp_pipeline_version"] == "0.2.0-3f2c1ab"
        assert "kfp_scheduled_at" not in tags
    scheduled = client.search_runs(
        [run.info.experiment_id], "tags.kfp_schedule = 'nightly'", max_results=10
    )
    assert [r.info.run_id for r in scheduled] == [run.info.run_id]
