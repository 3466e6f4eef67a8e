"""The `digits` command line."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from digits.app.cli import app

runner = CliRunner()


def test_compile_takes_images_and_the_gpu_pool(tmp_path):
    output = tmp_path / "p.yaml"
    result = runner.invoke(
        app,
        [
            "compile",
            "--output", str(output),
            "--image", "reg.example/digits:2",
            "--train-image", "reg.example/digits:2-gpu",
            "--gpu-node-selector", "cloud.google.com/gke-nodepool=gpu-pool",
            "--gpu-toleration", "nvidia.com/gpu=present:NoSchedule",
            "--gpu-toleration", "spot:NoExecute",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all(output.read_text())
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert placed["nodeSelector"]["labels"] == {"cloud.google.com/gke-nodepool": "gpu-pool"}
    assert placed["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
    ]
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-ingest-csv"]["container"]["image"] == "reg.example/digits:2"


def test_malformed_toleration_is_refused_with_the_expected_form(tmp_path):
    result = runner.invoke(
        app, ["compile", "--output", str(tmp_path / "p.yaml"), "--gpu-toleration", "gpu:Never"]
    )
    assert result.exit_code == 2
    assert "KEY[=VALUE][:EFFECT]" in result.output


def test_more_than_one_gpu_is_refused_with_one_line_and_no_file(tmp_path):
    output = tmp_path / "p.yaml"
    result = runner.invoke(app, ["compile", "--output", str(output), "--gpus", "2"])

    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "2 GPUs requested" in line and "compile with --gpus 1" in line
    assert not output.exists()


def test_run_help_lists_the_documented_options():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    for option in ("--data", "--predict-data", "--epochs", "--summary-json", "--mlflow-uri"):
        assert option in result.output


def test_ui_without_a_local_store_says_what_to_run(tmp_path):
    result = runner.invoke(app, ["ui", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "no MLflow store" in line and "run `digits run` first" in line


@pytest.mark.slow
def test_ui_serves_the_local_store_that_digits_run_writes(tmp_path):
    from mlflow import MlflowClient

    from digits.app.local_run import local_mlflow_store

    tracking_uri, artifacts = local_mlflow_store(tmp_path)
    MlflowClient(tracking_uri).create_experiment("digits", artifact_location=artifacts)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ui = subprocess.Popen(
        [str(Path(sys.executable).with_name("digits")), "ui", "--output-dir", str(tmp_path),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
                    "?experiment_name=digits"
                )
                with urllib.request.urlopen(request, timeout=2) as response:
                    assert json.load(response)["experiment"]["name"] == "digits"
                    break
            except OSError:
                assert ui.poll() is None, ui.stdout.read()
                assert time.monotonic() < deadline, "digits ui did not answer"
                time.sleep(0.5)
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--predict-labels", "{tmp}/labels.csv"],
            "--predict-labels {tmp}/labels.csv does not exist",
        ),
        (["--data", "{tmp}/nope.csv"], "--data {tmp}/nope.csv does not exist"),
        (["--predict-data", "{tmp}"], "--predict-data {tmp} is a folder"),
        (["--checkpoint-dir", "{tmp}/file"], "--checkpoint-dir {tmp}/file is a file"),
        (["--recipe", "quick"], "unknown training recipe 'quick'"),
        (["--gpus", "2"], "need --runner docker"),
        (["--param", "epochs=3"], "--param epochs=3: use --epochs"),
        (["--param", "split_seed=two"], "split_seed takes int"),
        (["--param", "nope=1"], "'nope' is not a pipeline parameter"),
    ],
)
def test_run_checks_its_inputs_before_anything_starts(tmp_path, options, expected):
    (tmp_path / "file").write_text("")
    args = [option.format(tmp=tmp_path) for option in options]
    result = runner.invoke(app, ["run", "--output-dir", str(tmp_path / "out"), *args])

    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("digits run: ") and expected.format(tmp=tmp_path) in line
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
