"""`digits serve` over real HTTP on 127.0.0.1 against a real registry, and `digits deploy`.

The servers are `digits serve` processes (what a user runs); the registry is the `mlflow server`
fixture. The deploy tests render through the kserve SDK's typed models and apply against a local
server that records what the Kubernetes client sends, as test_submit does for KFP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from digits.app.cli import app
from digits.components import batch_predict, register_model
from digits.components.evaluate_model import evaluate_model
from digits.components.ingest_csv import ingest_csv
from digits.components.train_baseline import train_baseline
from digits.components.validate_data import validate_data
from digits.data import PIXEL_COLUMNS, sample_data
from digits.inference_service import Deployed, DeploySettings, render_inference_service
from digits.pipelines.placement import MLFLOW_CREDENTIAL_KEYS, ClusterSettings
from digits.registry import ModelVersionRef

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = "/usr/bin/kubectl"
MAX_BATCH = 500
MARKER = "PAYLOAD-MARKER-7f3a"  # put in bad requests; no answer may contain it
runner = CliRunner()


# ---- registry and servers -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _register(work: Path, tracking_uri: str, model_dir: Path, history: Path, validation: Path):
    """Register a model directory (CNN or baseline) as a new registered model, alias champion."""
    evaluate_model(model_dir, validation, work / "evaluation.json")
    name = f"serve-{work.name}"
    registration = register_model.register_model(
        register_model.RunRecord(
            model_dir=model_dir,
            history_path=history,
            evaluation_path=work / "evaluation.json",
            validation_path=validation,
            pipeline_run_id=name,
        ),
        tracking_uri=tracking_uri,
        experiment_name=name,
        registered_model_name=name,
    )
    MlflowClient(tracking_uri).set_registered_model_alias(
        name, "champion", registration.model_version
    )
    return name, registration


@dataclass
class Answer:
    status: int
    headers: dict  # names in lower case
    text: str

    @property
    def json(self):
        return json.loads(self.text)


@dataclass
class Server:
    """A `digits serve` process and its log."""

    url: str
    process: subprocess.Popen
    log: Path
    name: str

    def request(self, method, path, body=None, content_type="application/json", headers=None):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        sent = dict(headers or {})
        if content_type:
            sent["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, got, text = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, got, text = error.code, error.headers, error.read()
        return Answer(status, {k.lower(): v for k, v in got.items()}, text.decode())

    def v2(self, pixels: np.ndarray, datatype="UINT8", shape=None) -> Answer:
        shape = shape or [len(pixels), 784]
        inputs = [{"name": "images", "datatype": datatype, "shape": shape, "data": pixels.tolist()}]
        return self.request("POST", f"/v2/models/{self.name}/infer", {"inputs": inputs})

    def v1(self, instances: list) -> Answer:
        return self.request("POST", f"/v1/models/{self.name}:predict", {"instances": instances})


def _start(tmp: Path, tracking_uri: str, model_uri: str, name: str) -> Server:
    port = _free_port()
    log = tmp / f"serve-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("digits")),
                "serve",
                "--model-uri",
                model_uri,
                "--mlflow-uri",
                tracking_uri,
                "--port",
                str(port),
                "--max-batch",
                str(MAX_BATCH),
            ],  # fmt: skip
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, name)
    deadline = time.monotonic() + 180
    while True:
        try:
            if server.request("GET", "/v2/health/ready").status == 200:
                return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"digits serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _another_version(client: MlflowClient, name: str, version: str):
    """A new version of ``name`` holding the same files as ``version``."""
    found = client.get_model_version(name, version)  # source: models:/<logged model id>
    model_id = found.source.removeprefix("models:/")
    return client.create_model_version(name, found.source, found.run_id, model_id=model_id)


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def sample_rows(tmp_path_factory) -> Path:
    """The bundled sample's 2,000 test digits, validated by the pipeline's own steps."""
    work = tmp_path_factory.mktemp("rows")
    ingest_csv(str(sample_data("test.csv.gz")), work / "dataset")
    validate_data(
        work / "dataset",
        work / "valid.parquet",
        work / "rejected.parquet",
        work / "report.json",
        source="test.csv.gz",
        require_label=False,
    )
    return work / "valid.parquet"


@pytest.fixture(scope="module")
def sample_pixels(sample_rows) -> np.ndarray:
    return pd.read_parquet(sample_rows, columns=PIXEL_COLUMNS).to_numpy(dtype=np.uint8)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, mlflow_server, trained_model, split_sets):
    """(name, registration) of the 1-epoch CNN, champion of its own registered model."""
    work = tmp_path_factory.mktemp("cnn")
    return _register(work, mlflow_server, trained_model[0], trained_model[1], split_sets[1])


@pytest.fixture(scope="module")
def cnn_server(tmp_path_factory, mlflow_server, cnn):
    name, _ = cnn
    server = _start(
        tmp_path_factory.mktemp("cnn-server"), mlflow_server, f"models:/{name}@champion", name
    )
    yield server
    _stop(server)


# ---- both protocols -----------------------------------------------------------------------------


def test_health_and_metadata_name_the_registered_version_and_run(cnn_server, cnn):
    name, registration = cnn

    assert cnn_server.request("GET", "/v2/health/live").status == 200
    metadata = cnn_server.request("GET", f"/v2/models/{name}")

    assert metadata.status == 200
    assert metadata.headers["x-model-version"] == registration.model_version
    body = metadata.json
    assert body["name"] == name and body["versions"] == [registration.model_version]
    assert body["parameters"]["run_id"] == registration.run_id
    assert body["parameters"]["model_uri"] == f"models:/{name}/{registration.model_version}"
    assert body["parameters"]["requested_uri"] == f"models:/{name}@champion"
    assert [tensor["name"] for tensor in body["inputs"]] == ["images"]
    assert [tensor["name"] for tensor in body["outputs"]] == ["probabilities", "label"]


def test_v2_gives_the_batch_predictors_probabilities_on_the_sample_test_rows(
    tmp_path, cnn_server, cnn, mlflow_server, sample_rows, sample_pixels
):
    name, registration = cnn
    batch_predict.batch_predict(
        sample_rows,
        tmp_path / "submission.csv",
        tmp_path / "probabilities.parquet",
        model_uri=f"models:/{name}@champion",
        tracking_uri=mlflow_server,
    )
    expected = pd.read_parquet(tmp_path / "probabilities.parquet").iloc[:, 1:].to_numpy()

    served, labels = [], []
    for start in range(0, len(sample_pixels), MAX_BATCH):
        answer = cnn_server.v2(sample_pixels[start : start + MAX_BATCH])
        assert answer.status == 200, answer.text
        assert answer.headers["x-model-version"] == registration.model_version
        body = answer.json
        assert body["model_name"] == name
        assert body["model_version"] == registration.model_version
        outputs = {output["name"]: output for output in body["outputs"]}
        served.append(np.asarray(outputs["probabilities"]["data"]).reshape(-1, 10))
        labels += outputs["label"]["data"]

    served = np.concatenate(served)
    assert served.shape == (2000, 10)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    assert labels == pd.read_csv(tmp_path / "submission.csv")["Label"].tolist()


def test_v1_uint8_rows_and_fp32_images_match_v2(cnn_server, cnn, sample_pixels):
    _, registration = cnn
    pixels = sample_pixels[:16]
    v2 = cnn_server.v2(pixels).json["outputs"][0]["data"]

    flat_uint8 = cnn_server.v1(pixels.tolist())
    fp32_images = (pixels.astype(np.float32) / 255.0).reshape(-1, 28, 28)
    nested_fp32 = cnn_server.v1(fp32_images.tolist())
    v2_fp32 = cnn_server.v2(fp32_images.reshape(-1, 28, 28, 1), "FP32", [16, 28, 28, 1])

    for answer in (flat_uint8, nested_fp32, v2_fp32):
        assert answer.status == 200, answer.text
        assert answer.headers["x-model-version"] == registration.model_version
    assert flat_uint8.json["model_version"] == registration.model_version
    for answer in (flat_uint8, nested_fp32):
        predictions = answer.json["predictions"]
        probabilities = np.asarray([p["probabilities"] for p in predictions])
        np.testing.assert_allclose(probabilities, np.reshape(v2, (-1, 10)), rtol=0, atol=1e-6)
        assert [p["label"] for p in predictions] == probabilities.argmax(axis=1).tolist()
    fp32_data = v2_fp32.json["outputs"][0]["data"]
    np.testing.assert_allclose(fp32_data, v2, rtol=0, atol=1e-6)


def test_concurrent_requests_each_get_their_own_digits(cnn_server, sample_pixels):
    """Requests arriving together share model calls; each answer holds its own rows."""
    from concurrent.futures import ThreadPoolExecutor

    pixels = sample_pixels[:120]
    whole = np.reshape(cnn_server.v2(pixels).json["outputs"][0]["data"], (-1, 10))
    sizes = [1, 2, 3, 4, 5, 6, 7, 8] * 3 + [12]  # 120 rows in 25 requests
    starts = np.cumsum([0, *sizes[:-1]])

    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda part: cnn_server.v2(pixels[part[0] : part[0] + part[1]]),
                     zip(starts, sizes, strict=True))
        )  # fmt: skip

    for start, size, answer in zip(starts, sizes, answers, strict=True):
        assert answer.status == 200, answer.text
        served = np.reshape(answer.json["outputs"][0]["data"], (-1, 10))
        np.testing.assert_allclose(served, whole[start : start + size], rtol=0, atol=1e-6)


def _v2_body(datatype="UINT8", shape=(1, 784), data=None) -> dict:
    data = [0] * 784 if data is None else data
    tensor = {"name": MARKER, "datatype": datatype, "shape": list(shape), "data": data}
    return {"id": MARKER, "inputs": [tensor]}


def _v1_body(instances) -> dict:
    return {"instances": instances, "marker": MARKER}


NAN_V2 = (
    b'{"id": "' + MARKER.encode() + b'", "inputs": [{"name": "images", "datatype": "FP32", '
    b'"shape": [1, 784], "data": [NaN' + b", 0" * 783 + b"]}]}"
)
BAD_REQUESTS = {
    # v2
    "v2 shape 783": ("v2", _v2_body(shape=(1, 783), data=[0] * 783)),
    "v2 shape without batch": ("v2", _v2_body(shape=(784,))),
    "v2 data and shape disagree": ("v2", _v2_body(shape=(2, 784))),
    "v2 ragged data": ("v2", _v2_body(shape=(2, 784), data=[[0] * 784, [0] * 783])),
    "v2 datatype INT32": ("v2", _v2_body(datatype="INT32")),
    "v2 datatype BYTES": ("v2", _v2_body(datatype="BYTES", data=[MARKER] * 784)),
    "v2 UINT8 above 255": ("v2", _v2_body(data=[256] + [0] * 783)),
    "v2 UINT8 negative": ("v2", _v2_body(data=[-1] + [0] * 783)),
    "v2 UINT8 fraction": ("v2", _v2_body(data=[0.5] * 784)),
    "v2 FP32 above 1": ("v2", _v2_body(datatype="FP32", data=[255.0] * 784)),
    "v2 NaN": ("v2", NAN_V2),
    "v2 strings": ("v2", _v2_body(data=[MARKER] * 784)),
    "v2 nulls": ("v2", _v2_body(data=[None] * 784)),
    "v2 empty batch": ("v2", _v2_body(shape=(0, 784), data=[])),
    "v2 batch too large": ("v2", _v2_body(shape=(MAX_BATCH + 1, 784), data=[0] * 784 * 501)),
    "v2 two inputs": ("v2", {"inputs": _v2_body()["inputs"] * 2}),
    "v2 no inputs": ("v2", {"id": MARKER}),
    "v2 inputs not a list": ("v2", {"inputs": MARKER}),
    "v2 body a list": ("v2", [MARKER]),
    "v2 body a string": ("v2", MARKER),
    "v2 malformed JSON": ("v2", b'{"inputs": [' + MARKER.encode()),
    "v2 text/plain": ("v2", _v2_body(), "text/plain"),
    "v2 form content type": ("v2", _v2_body(), None),  # urllib sends form-urlencoded
    "v2 binary extension": (
        "v2",
        _v2_body(),
        "application/json",
        {"Inference-Header-Content-Length": "9"},
    ),
    # v1
    "v1 instance of 10 values": ("v1", _v1_body([[0] * 10])),
    "v1 28 rows of 27": ("v1", _v1_body([[[0] * 27] * 28])),
    "v1 above 255": ("v1", _v1_body([[300] * 784])),
    "v1 FP32 above 1": ("v1", _v1_body([[1.5] * 784])),
    "v1 NaN": ("v1", b'{"instances": [[NaN' + b", 0" * 783 + b"]]}"),
    "v1 booleans": ("v1", _v1_body([[True] * 784])),
    "v1 strings": ("v1", _v1_body([[MARKER] * 784])),
    "v1 ragged": ("v1", _v1_body([[0] * 784, [0] * 783])),
    "v1 empty batch": ("v1", _v1_body([])),
    "v1 batch too large": ("v1", _v1_body([[0] * 784] * (MAX_BATCH + 1))),
    "v1 instances not a list": ("v1", _v1_body(MARKER)),
    "v1 no instances": ("v1", {"inputs": [[0] * 784], "marker": MARKER}),
    "v1 body a list": ("v1", [MARKER]),
    "v1 malformed JSON": ("v1", b'{"instances": ' + MARKER.encode()),
    "v1 text/plain": ("v1", _v1_body([[0] * 784]), "text/plain"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_with_one_line_and_no_echo(cnn_server, cnn, case):
    protocol, body, *rest = BAD_REQUESTS[case]
    path = (
        f"/v2/models/{cnn_server.name}/infer"
        if protocol == "v2"
        else f"/v1/models/{cnn_server.name}:predict"
    )

    answer = cnn_server.request("POST", path, body, *rest)

    assert 400 <= answer.status < 500, (answer.status, answer.text)
    error = answer.json["error"]
    assert "\n" not in error and len(error) < 400, error
    assert "expected" in error or "application/json" in error, error
    assert MARKER not in answer.text
    assert answer.headers["x-model-version"] == cnn[1].model_version


def test_unknown_model_is_404_and_the_server_keeps_serving(cnn_server, sample_pixels):
    answer = cnn_server.request("POST", "/v2/models/other/infer", _v2_body())
    assert answer.status == 404
    assert cnn_server.v2(sample_pixels[:1]).status == 200


# ---- reload -------------------------------------------------------------------------------------


def test_reload_after_the_alias_moves_reports_the_new_version(
    tmp_path_factory, mlflow_server, trained_model, split_sets, sample_pixels
):
    work = tmp_path_factory.mktemp("reload")
    name, first = _register(work, mlflow_server, trained_model[0], trained_model[1], split_sets[1])
    server = _start(work, mlflow_server, f"models:/{name}@champion", name)
    try:
        client = MlflowClient(mlflow_server)
        two = _another_version(client, name, first.model_version)
        client.set_registered_model_alias(name, "champion", two.version)
        assert server.v2(sample_pixels[:1]).json["model_version"] == first.model_version

        loaded = server.request("POST", f"/v2/repository/models/{name}/load")

        assert loaded.status == 200, loaded.text
        assert loaded.headers["x-model-version"] == two.version
        answer = server.v2(sample_pixels[:1])
        assert answer.json["model_version"] == two.version
        assert answer.headers["x-model-version"] == two.version
        assert server.v1([[0] * 784]).json["model_version"] == two.version
        assert f"{name}: v{first.model_version} -> v{two.version}" in server.log.read_text()

        client.set_registered_model_alias(name, "champion", first.model_version)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while server.request("GET", f"/v2/models/{name}").json["versions"] != [first.model_version]:
            assert time.monotonic() < deadline, server.log.read_text()[-2000:]
            time.sleep(0.5)
        assert f"{name}: v{two.version} -> v{first.model_version}" in server.log.read_text()
        assert "SIGHUP" in server.log.read_text()
    finally:
        _stop(server)


# ---- the scikit-learn baseline ------------------------------------------------------------------


def test_the_sklearn_baseline_is_served_with_the_batch_predictors_probabilities(
    tmp_path_factory, mlflow_server, split_sets, sample_rows, sample_pixels
):
    work = tmp_path_factory.mktemp("baseline")
    train_baseline(split_sets[0], work / "model", work / "history.json")
    name, registration = _register(
        work, mlflow_server, work / "model", work / "history.json", split_sets[1]
    )
    server = _start(work, mlflow_server, f"models:/{name}@champion", name)
    try:
        rows = pd.read_parquet(sample_rows).head(100)
        rows.to_parquet(work / "rows.parquet", index=False)
        batch_predict.batch_predict(
            work / "rows.parquet",
            work / "submission.csv",
            work / "probabilities.parquet",
            model_uri=f"models:/{name}@champion",
            tracking_uri=mlflow_server,
        )
        expected = pd.read_parquet(work / "probabilities.parquet").iloc[:, 1:].to_numpy()

        answer = server.v2(sample_pixels[:100])

        assert answer.status == 200, answer.text
        assert answer.json["model_version"] == registration.model_version
        served = np.asarray(answer.json["outputs"][0]["data"]).reshape(-1, 10)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    finally:
        _stop(server)


# ---- command line -------------------------------------------------------------------------------


def test_serve_an_unknown_alias_is_one_line_listing_the_registry(mlflow_server, cnn):
    name, registration = cnn

    result = runner.invoke(
        app,
        ["serve", "--model-uri", f"models:/{name}@production", "--mlflow-uri", mlflow_server],
    )

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"digits serve: models:/{name}@production: no such registered model")
    assert f"{name} (champion=v{registration.model_version})" in line


def test_serve_refuses_a_uri_that_is_not_a_registered_version(mlflow_server):
    result = runner.invoke(app, ["serve", "--model-uri", "runs:/abc/model", "--mlflow-uri", "x"])

    assert result.exit_code == 1
    assert "expected a registered model version, models:/NAME@ALIAS" in result.stderr


# ---- the InferenceService -----------------------------------------------------------------------

VERSION_3 = ModelVersionRef(
    name="digits-cnn", version="3", run_id="r3", requested="models:/digits-cnn@champion"
)


def test_the_inference_service_pins_the_version_and_runs_the_project_image():
    service = render_inference_service(VERSION_3)

    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    assert service["metadata"]["name"] == "digits"
    assert service["metadata"]["namespace"] == "kubeflow"
    annotations = service["metadata"]["annotations"]
    assert annotations["digits/model-version"] == "3"
    assert annotations["digits/model-uri"] == "models:/digits-cnn/3"
    assert annotations["digits/requested-uri"] == "models:/digits-cnn@champion"
    predictor = service["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # the first version takes all traffic
    (container,) = predictor["containers"]
    assert container["image"] == ClusterSettings().image
    assert container["command"] == ["digits"]
    arguments = container["args"]
    assert arguments[0] == "serve"
    assert arguments[arguments.index("--model-uri") + 1] == "models:/digits-cnn/3"
    assert not any("@" in argument for argument in arguments)
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == DeploySettings().mlflow_uri
    for key in MLFLOW_CREDENTIAL_KEYS:
        reference = env[key]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "mlflow-credentials", "key": key, "optional": True}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["ports"][0]["containerPort"] == 8080
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()


def test_the_predictor_container_validates_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    newest = ".".join(str(kubernetes_validate.latest_version()).split(".")[:2])
    predictor = render_inference_service(VERSION_3)["spec"]["predictor"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {"containers": predictor["containers"]},
    }
    kubernetes_validate.validate(pod, newest, strict=True)


def test_the_sdk_models_refuse_a_misspelt_field():
    from digits.kserve_compat import import_kserve

    kserve = import_kserve()
    with pytest.raises(TypeError):
        kserve.V1beta1PredictorSpec(canary_traffic_percentage=10)


@pytest.mark.parametrize(
    ("current", "promote", "percent", "expected"),
    [
        (None, False, 10, None),  # first deployment: all traffic
        (Deployed("2", None), False, 10, 10),  # an older version is served: canary
        (Deployed("2", None), False, 25, 25),
        (Deployed("2", 10), True, 10, 100),  # promote
        (Deployed("3", 10), False, 10, 10),  # the same version again: split kept
        (Deployed("3", None), False, 10, None),
        (None, True, 10, 100),
    ],
)
def test_canary_when_an_older_version_is_served_and_promote_sends_all(
    current, promote, percent, expected
):
    settings = DeploySettings(canary_percent=percent)
    service = render_inference_service(VERSION_3, settings, current, promote)
    assert service["spec"]["predictor"].get("canaryTrafficPercent") == expected


def test_the_default_tracking_uri_is_the_pipelines():
    from digits.config import DEFAULT_MLFLOW_URI

    assert DeploySettings().mlflow_uri == DEFAULT_MLFLOW_URI


def test_an_impossible_canary_share_is_refused(mlflow_server, cnn):
    result = runner.invoke(
        app,
        ["deploy", "--model-uri", f"models:/{cnn[0]}@champion", "--mlflow-uri", mlflow_server,
         "--canary-percent", "0"],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "--canary-percent 0: expected 1-100" in result.stderr


# ---- a recording Kubernetes API -----------------------------------------------------------------

ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "serving.kserve.io",
                "versions": [{"groupVersion": "serving.kserve.io/v1beta1", "version": "v1beta1"}],
                "preferredVersion": {
                    "groupVersion": "serving.kserve.io/v1beta1",
                    "version": "v1beta1",
                },
            }
        ],
    },
    "/apis/serving.kserve.io/v1beta1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "serving.kserve.io/v1beta1",
        "resources": [
            {
                "name": "inferenceservices",
                "singularName": "inferenceservice",
                "namespaced": True,
                "kind": "InferenceService",
                "shortNames": ["isvc"],
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
        ],
    },
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: dict | None


@dataclass
class FakeKube:
    url: str = ""
    objects: dict = field(default_factory=dict)  # path -> stored object
    requests: list[Recorded] = field(default_factory=list)
    refuse_with: int | None = None

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT")]


def _kube_handler(kube: FakeKube):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, body: dict) -> None:
            from kfp_recorder import answer_json

            answer_json(self, status, body)

        def _handle(self, method: str) -> None:
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            if path in DISCOVERY and method == "GET":
                self._answer(200, DISCOVERY[path])
                return
            kube.requests.append(Recorded(method, path, headers, body))
            if kube.refuse_with:
                self._answer(kube.refuse_with, {"kind": "Status", "message": "forbidden: no"})
            elif method == "GET" and path in kube.objects:
                self._answer(200, kube.objects[path])
            elif method == "GET":
                self._answer(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            elif method == "POST":
                name = body["metadata"]["name"]
                kube.objects[f"{path}/{name}"] = body
                self._answer(201, body)
            elif method == "PATCH" and path in kube.objects:
                stored = kube.objects[path]
                stored["metadata"]["annotations"].update(body["metadata"]["annotations"])
                stored["spec"] = body["spec"]
                self._answer(200, stored)
            else:
                self._answer(404, {"kind": "Status", "code": 404})

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_PATCH(self):
            self._handle("PATCH")

    return Handler


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A recording Kubernetes API on 127.0.0.1, and a kubeconfig pointing at it."""
    fake = FakeKube()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _kube_handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "fake", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield fake
    server.shutdown()
    server.server_close()


def _deploy(mlflow_server, name, *args):
    return runner.invoke(
        app,
        ["deploy", "--model-uri", f"models:/{name}@champion", "--mlflow-uri", mlflow_server,
         "--name", "digits", "--namespace", "serving-test", *args],
    )  # fmt: skip


def test_apply_creates_then_canaries_a_new_version_then_promotes(kube, mlflow_server, cnn):
    name, registration = cnn
    collection = ISVC_PATH.format(namespace="serving-test")
    first = registration.model_version

    created = _deploy(mlflow_server, name, "--apply")

    assert created.exit_code == 0, created.output
    assert [(r.method, r.path) for r in kube.requests] == [
        ("GET", f"{collection}/digits"),
        ("POST", collection),
    ]
    assert all(r.headers["authorization"] == "Bearer test-token" for r in kube.requests)
    body = kube.requests[1].body
    assert body["metadata"]["annotations"]["digits/model-version"] == first
    assert "canaryTrafficPercent" not in body["spec"]["predictor"]
    assert f"{name} v{first}" in created.stderr and "all traffic; created" in created.stderr

    client = MlflowClient(mlflow_server)
    second = _another_version(client, name, first).version
    client.set_registered_model_alias(name, "champion", second)
    try:
        kube.requests.clear()
        canary = _deploy(mlflow_server, name, "--apply", "--canary-percent", "20")

        assert canary.exit_code == 0, canary.output
        assert [(r.method, r.path) for r in kube.requests] == [
            ("GET", f"{collection}/digits"),
            ("PATCH", f"{collection}/digits"),
        ]
        patch = kube.requests[1]
        assert patch.headers["content-type"] == "application/merge-patch+json"
        assert patch.body["spec"]["predictor"]["canaryTrafficPercent"] == 20
        (container,) = patch.body["spec"]["predictor"]["containers"]
        assert f"models:/{name}/{second}" in container["args"]
        assert f"canary, 20% of traffic; v{first} keeps the rest" in canary.stderr

        kube.requests.clear()
        promoted = _deploy(mlflow_server, name, "--apply", "--promote")

        assert promoted.exit_code == 0, promoted.output
        assert [r.method for r in kube.requests] == ["GET", "PATCH"]
        assert kube.requests[1].body["spec"]["predictor"]["canaryTrafficPercent"] == 100
    finally:
        client.set_registered_model_alias(name, "champion", first)


def test_apply_refused_by_rbac_is_one_line_naming_the_manifests(kube, mlflow_server, cnn):
    kube.refuse_with = 403

    result = _deploy(mlflow_server, cnn[0], "--apply")

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot read InferenceService serving-test/digits: HTTP 403" in line
    assert "manifests/serving" in line
    assert not kube.writes()


def test_the_written_file_is_what_kubectl_reads(tmp_path, kube, mlflow_server, cnn):
    if not Path(KUBECTL).is_file():
        pytest.skip(f"{KUBECTL} is not installed (Debian: kubernetes-client, or Google's kubectl)")
    name, registration = cnn
    output = tmp_path / "isvc.yaml"

    result = _deploy(mlflow_server, name, "--current-version", "0", "--output", str(output))

    assert result.exit_code == 0, result.output
    # kubectl maps the kind through the recording API's discovery; --validate=false because it
    # has no KServe CRD schema to fetch (a cluster would have one).
    rendered = subprocess.run(
        [KUBECTL, "create", "--dry-run=client", "--validate=false", "-o", "yaml", "-f", str(output),
         "--cache-dir", str(tmp_path / "kube-cache")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert yaml.safe_load(rendered.stdout) == yaml.safe_load(output.read_text())
    service = yaml.safe_load(output.read_text())
    assert service["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert service["metadata"]["annotations"]["digits/model-version"] == registration.model_version
    assert not kube.writes()


# ---- RBAC for the pipeline's deploy step --------------------------------------------------------


def test_serving_rbac_lets_pipeline_runner_manage_inference_services():
    directory = ROOT / "manifests" / "serving"
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = [
        obj
        for resource in kustomization["resources"]
        for obj in yaml.safe_load_all((directory / resource).read_text())
        if obj
    ]
    (role,) = [obj for obj in objects if obj["kind"] == "Role"]
    (binding,) = [obj for obj in objects if obj["kind"] == "RoleBinding"]
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["serving.kserve.io"]
    assert rule["resources"] == ["inferenceservices"]
    assert set(rule["verbs"]) == {"get", "list", "watch", "create", "patch", "update"}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]
    kubectl = shutil.which("kubectl")
    if kubectl:
        rendered = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert rendered.returncode == 0, rendered.stderr
        assert {o["kind"] for o in yaml.safe_load_all(rendered.stdout)} == {"Role", "RoleBinding"}


def test_the_pipeline_deploy_step_serves_the_gates_version(kube, mlflow_server, cnn):
    """components/deploy_model (pipeline parameter deploy): the exact version, applied."""
    from digits.components import deploy_model

    name, registration = cnn
    wrapper = deploy_model.component("digits:test").python_func

    summary = wrapper(
        mlflow_tracking_uri=mlflow_server,
        registered_model_name=name,
        champion_version=registration.model_version,
        service_name="digits",
        namespace="serving-test",
        serving_image="registry.example/digits:1",
        mlflow_secret="mlflow-credentials",
        canary_percent=10,
    )

    collection = ISVC_PATH.format(namespace="serving-test")
    assert [(r.method, r.path) for r in kube.requests][-1][0] in ("POST", "PATCH")
    assert any(r.path.startswith(collection) for r in kube.requests)
    body = kube.requests[-1].body
    (container,) = body["spec"]["predictor"]["containers"]
    assert container["image"] == "registry.example/digits:1"
    assert f"models:/{name}/{registration.model_version}" in container["args"]
    assert f"{name} v{registration.model_version}" in summary and "\n" not in summary
