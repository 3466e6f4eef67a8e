"""The `digits` command line."""

import yaml
from typer.testing import CliRunner

from digits.cli import app

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
