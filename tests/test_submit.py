"""`digits submit` against a local server that speaks enough of the KFP v2beta1 REST API for
kfp.Client 2.17.3 and records every request (`kfp_recorder`)."""

import json
import socket

import pytest
import yaml
from typer.testing import CliRunner

from digits.app.cli import app

runner = CliRunner()
REQUIRED = [
    "--param",
    "train_data_uri=gs://b/train.csv",
    "--param",
    "predict_data_uri=gs://b/t.csv",
]


@pytest.fixture(autouse=True)
def no_service_account_token(monkeypatch, tmp_path):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent-token"))


def _submit(kfp, *args):
    return runner.invoke(app, ["submit", "--host", kfp.url, *args])


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_submit_sends_the_ir_typed_parameters_experiment_run_name_and_token(kfp_server, package):
    result = _submit(
        kfp_server,
        "--package", str(package),
        "--experiment", "digits-nightly",
        "--run-name", "nightly-1",
        "--token", "s3cret",
        *REQUIRED,
        "--param", "epochs=3",
        "--param", "promotion_margin=0.01",
        "--param", "train_baseline=false",
        "--param", "mlflow_tracking_uri=http://mlflow:5000",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "run-42" in result.stdout
    assert f"{kfp_server.url}/#/runs/details/run-42" in result.stdout
    assert [r.headers.get("authorization") for r in kfp_server.requests] == ["Bearer s3cret"] * len(
        kfp_server.requests
    ), [(r.method, r.path) for r in kfp_server.requests]

    (listed,) = kfp_server.calls("GET", "/apis/v2beta1/experiments")
    predicate = json.loads(listed.query["filter"][0])["predicates"][0]
    assert predicate["key"] == "display_name" and predicate["stringValue"] == "digits-nightly"
    (created,) = kfp_server.calls("POST", "/apis/v2beta1/experiments")
    assert created.body["display_name"] == "digits-nightly"

    (run,) = kfp_server.calls("POST", "/apis/v2beta1/runs")
    assert run.body["experiment_id"] == "exp-7"
    assert run.body["display_name"] == "nightly-1"
    spec, platform = yaml.safe_load_all(package.read_text())
    assert run.body["pipeline_spec"]["pipeline_spec"] == json.loads(json.dumps(spec))
    assert run.body["pipeline_spec"]["platform_spec"] == json.loads(json.dumps(platform))
    parameters = run.body["runtime_config"]["parameters"]
    assert parameters == {
        "train_data_uri": "gs://b/train.csv",
        "predict_data_uri": "gs://b/t.csv",
        "epochs": 3,
        "promotion_margin": 0.01,
        "train_baseline": False,
        "mlflow_tracking_uri": "http://mlflow:5000",
    }
    assert type(parameters["epochs"]) is int and type(parameters["train_baseline"]) is bool
    assert "enable_cache" not in json.dumps(run.body["runtime_config"])


def test_without_package_it_compiles_with_the_compile_options(kfp_server):
    result = _submit(
        kfp_server,
        *REQUIRED,
        "--image", "reg.example/digits:9",
        "--mlflow-secret", "tracking-auth",
        "--train-memory", "30Gi",
        "--no-cache",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (run,) = kfp_server.calls("POST", "/apis/v2beta1/runs")
    spec, platform = (
        run.body["pipeline_spec"]["pipeline_spec"],
        run.body["pipeline_spec"]["platform_spec"],
    )
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-ingest-csv"]["container"]["image"] == "reg.example/digits:9"
    train = executors["exec-train-model"]["container"]["resources"]
    assert train["resourceMemoryLimit"] == "30Gi"
    register = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-register-model"
    ]
    assert register["secretAsEnv"][0]["secretName"] == "tracking-auth"
    # --no-cache turns caching off in every task of the submitted spec.
    tasks = spec["root"]["dag"]["tasks"]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())


def test_service_account_token_file_is_used_when_no_token_is_given(
    kfp_server, package, tmp_path, monkeypatch
):
    token_file = tmp_path / "token"
    token_file.write_text("projected-sa-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))

    result = _submit(kfp_server, "--package", str(package), *REQUIRED)

    assert result.exit_code == 0, result.output
    (run,) = kfp_server.calls("POST", "/apis/v2beta1/runs")
    assert run.headers["authorization"] == "Bearer projected-sa-token"


def test_wait_follows_the_run_until_it_succeeds(kfp_server, package):
    kfp_server.run_states = ["RUNNING", "RUNNING", "SUCCEEDED"]

    result = _submit(
        kfp_server, "--package", str(package), *REQUIRED, "--wait", "--poll-seconds", "0"
    )

    assert result.exit_code == 0, result.output
    assert len(kfp_server.calls("GET", "/apis/v2beta1/runs/run-42")) == 3
    assert "state   RUNNING" in result.stdout and "state   SUCCEEDED" in result.stdout


def test_wait_exits_non_zero_with_the_reason_when_the_run_fails(kfp_server, package):
    kfp_server.run_states = ["RUNNING", "FAILED"]

    result = _submit(
        kfp_server, "--package", str(package), *REQUIRED, "--wait", "--poll-seconds", "0"
    )

    assert result.exit_code == 1
    assert _one_error_line(result) == (
        "digits submit: run run-42 ended FAILED: train-model: OOMKilled"
    )


@pytest.mark.parametrize("status", [401, 403])
def test_refused_auth_is_one_line_and_nothing_is_created(kfp_server, package, status):
    kfp_server.refuse_with = status

    result = _submit(kfp_server, "--package", str(package), *REQUIRED, "--token", "expired")

    assert result.exit_code == 1
    assert f"refused the credentials (HTTP {status})" in _one_error_line(result)
    assert not kfp_server.calls("POST", "/apis/v2beta1/runs")


def test_unreachable_host_is_one_line(package):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = runner.invoke(
        app, ["submit", "--host", f"http://127.0.0.1:{port}", "--package", str(package), *REQUIRED]
    )

    assert result.exit_code == 1
    assert f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}" in _one_error_line(result)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["--param", "epoch=3"], "unknown pipeline parameter(s) epoch; the pipeline takes:"),
        (["--param", "epochs=three"], "--param epochs=three: epochs takes an integer"),
        (
            ["--param", "train_baseline=maybe"],
            "--param train_baseline=maybe: train_baseline takes true or false",
        ),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(kfp_server, package, params, message):
    result = _submit(kfp_server, "--package", str(package), *REQUIRED, *params)

    assert result.exit_code == 1
    assert message in _one_error_line(result)
    assert kfp_server.requests == []


def test_missing_required_parameter_is_refused_before_anything_is_sent(kfp_server, package):
    result = _submit(kfp_server, "--package", str(package), "--param", "train_data_uri=x.csv")

    assert result.exit_code == 1
    assert "pass --param predict_data_uri=..." in _one_error_line(result)
    assert kfp_server.requests == []
