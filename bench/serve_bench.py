"""Serving: `digits serve` beside `mlflow models serve` on one model version, then a load test.

Run with the project's venv, no arguments:

    .venv/bin/python bench/serve_bench.py

It trains the real CNN briefly (the fast recipe, 2 epochs on the bundled sample's 7,200 training
rows) through the pipeline's own steps, registers it in a throw-away MLflow store (SQLite and a
folder under a temporary directory), and starts both servers on 127.0.0.1, one worker each, on
that version (`models:/serve-bench/1`; MLflow's with ``--env-manager local``). Each gets the
sample's 2,000 test digits in the form it takes: `digits serve` v2 UINT8 (0-255, it divides by
255), MLflow's /invocations FP32 tensors (already divided: its signature is the model's input).

1. batch 1, sequential, one persistent connection: p50 / p99 latency of every digit;
2. batch 64, 8 concurrent clients (threads, one connection each), the 2,000 digits three times
   over: images per second;
3. the ratio line, against the goals (p50 at batch 1 <= 10 ms; >= 10x MLflow's images/s);
4. `digits serve` alone: 5,000 requests, 16 concurrent clients, 10 % malformed (a mix of the
   contract's refusals), the good ones 1-8 digits each: 5xx count, malformed answered 4xx, good
   answers whose labels equal the batch predictor's (the pipeline's batch_predict on the same
   version), and the server's resident memory at start and end.

Request bodies are encoded before the clock starts; clients run on the same cores as the servers.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from digits.components import batch_predict, register_model
from digits.components.evaluate_model import evaluate_model
from digits.components.ingest_csv import ingest_csv
from digits.components.normalize_and_split import normalize_and_split
from digits.components.train_model import train_model
from digits.components.validate_data import validate_data
from digits.config import resolve_recipe
from digits.data import PIXEL_COLUMNS, sample_data

NAME = "serve-bench"
EPOCHS = 2
BATCH = 64
CLIENTS = 8
PASSES = 3
LOAD_REQUESTS = 5000
LOAD_CLIENTS = 16
MALFORMED_SHARE = 0.10


# ---- the model ----------------------------------------------------------------------------------


def _validated(source: Path, work: Path, require_label: bool) -> Path:
    stem = source.name.split(".")[0]
    ingest_csv(str(source), work / f"{stem}-dataset")
    validate_data(
        work / f"{stem}-dataset",
        work / f"{stem}-valid.parquet",
        work / f"{stem}-rejected.parquet",
        work / f"{stem}-report.json",
        source=str(source),
        require_label=require_label,
    )
    return work / f"{stem}-valid.parquet"


def register_trained_cnn(work: Path, tracking_uri: str, artifacts: str) -> str:
    """Train EPOCHS epochs on the sample, register as NAME; return the version."""
    valid = _validated(sample_data("train.csv.gz"), work, require_label=True)
    normalize_and_split(valid, work / "train.npz", work / "validation.npz", 0.1, seed=2)
    config = resolve_recipe("fast", epochs=EPOCHS)
    train_model(
        work / "train.npz", work / "validation.npz", work / "model", work / "history.json", config
    )
    evaluate_model(work / "model", work / "validation.npz", work / "evaluation.json")
    registration = register_model.register_model(
        register_model.RunRecord(
            model_dir=work / "model",
            history_path=work / "history.json",
            evaluation_path=work / "evaluation.json",
            validation_path=work / "validation.npz",
            pipeline_run_id="serve-bench",
        ),
        tracking_uri=tracking_uri,
        experiment_name=NAME,
        registered_model_name=NAME,
        artifact_location=artifacts,
    )
    return registration.model_version


# ---- servers and clients ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], ready_path: str, port: int, log: Path, env=None):
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", ready_path)
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit(f"serve_bench: {command[0]} did not start; its log:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


class Client:
    """One persistent HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes, content_type="application/json"):
        self.connection.request("POST", path, body, {"Content-Type": content_type})
        response = self.connection.getresponse()
        return response.status, response.read()


def digits_body(pixels: np.ndarray) -> bytes:
    tensor = {"name": "images", "datatype": "UINT8", "shape": [len(pixels), 784]}
    return json.dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}).encode()


def mlflow_body(pixels: np.ndarray) -> bytes:
    images = (pixels.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return json.dumps({"inputs": images.tolist()}).encode()


def sequential_latencies(port: int, path: str, bodies: list[bytes]) -> list[float]:
    client, seconds = Client(port), []
    for body in bodies[:5]:  # warm the connection and the server
        client.post(path, body)
    for body in bodies:
        start_time = time.perf_counter()
        status, _ = client.post(path, body)
        seconds.append(time.perf_counter() - start_time)
        assert status == 200, status
    return seconds


def concurrent_throughput(port: int, path: str, bodies: list[bytes], images: int, clients: int):
    """Images per second with ``clients`` threads sharing the bodies in order."""
    queue = list(reversed(bodies))
    lock = threading.Lock()

    def work():
        client = Client(port)
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            status, _ = client.post(path, body)
            assert status == 200, status

    Client(port).post(path, bodies[0])  # warm-up
    start_time = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return images / (time.perf_counter() - start_time)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the load test ------------------------------------------------------------------------------


def malformed_bodies() -> list[tuple[str, bytes, str]]:
    """(kind, body, content type): one of each of the contract's refusals."""
    good = {"name": "images", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}

    def v2(**change):
        return json.dumps({"inputs": [{**good, **change}]}).encode()

    json_type = "application/json"
    return [
        ("shape", v2(shape=[1, 783], data=[0] * 783), json_type),
        ("datatype", v2(datatype="INT32"), json_type),
        ("range", v2(data=[300] * 784), json_type),
        ("fp32 range", v2(datatype="FP32", data=[255.0] * 784), json_type),
        ("NaN", v2(datatype="FP32").replace(b"[0, 0", b"[NaN, 0", 1), json_type),
        ("empty", v2(shape=[0, 784], data=[]), json_type),
        ("too many", v2(shape=[1025, 784], data=[0] * 784 * 1025), json_type),
        ("ragged", v2(shape=[2, 784], data=[[0] * 784, [0] * 3]), json_type),
        ("strings", v2(data=["x"] * 784), json_type),
        ("malformed JSON", b'{"inputs": [{"name": "images", ', json_type),
        ("not an object", b"[1, 2, 3]", json_type),
        ("content type", v2(), "text/plain"),
    ]


def load_test(port: int, name: str, pixels: np.ndarray, expected: np.ndarray, pid: int) -> str:
    rng = random.Random(7)
    path = f"/v2/models/{name}/infer"
    bad = malformed_bodies()
    plan = []
    for _ in range(LOAD_REQUESTS):
        if rng.random() < MALFORMED_SHARE:
            kind, body, content_type = rng.choice(bad)
            plan.append(("bad", kind, body, content_type, None))
        else:
            start_row = rng.randrange(len(pixels) - 8)
            rows = slice(start_row, start_row + rng.randint(1, 8))
            plan.append(("good", "", digits_body(pixels[rows]), "application/json", rows))
    rss_start = rss_mb(pid)
    outcomes: Counter = Counter()
    latencies: list[float] = []
    position = iter(range(len(plan)))
    lock = threading.Lock()

    def work():
        client = Client(port)
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            kind, _, body, content_type, rows = plan[index]
            start_time = time.perf_counter()
            try:
                status, answer = client.post(path, body, content_type)
            except (OSError, http.client.HTTPException):
                client = Client(port)
                with lock:
                    outcomes["connection error"] += 1
                continue
            elapsed = time.perf_counter() - start_time
            with lock:
                latencies.append(elapsed)
                if status >= 500:
                    outcomes["5xx"] += 1
                if kind == "bad":
                    outcomes["bad 4xx" if 400 <= status < 500 else "bad other"] += 1
                else:
                    labels = None
                    if status == 200:
                        outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
                        labels = outputs["label"]["data"]
                    correct = labels == expected[rows].tolist()
                    outcomes["good correct" if correct else "good wrong"] += 1

    start_time = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        for _ in range(LOAD_CLIENTS):
            pool.submit(work)
    seconds = time.perf_counter() - start_time
    rss_end = rss_mb(pid)
    bad_count = sum(1 for item in plan if item[0] == "bad")
    good_count = len(plan) - bad_count
    latencies.sort()
    return (
        f"load: {len(plan):,} requests ({bad_count} malformed), {LOAD_CLIENTS} concurrent, "
        f"{len(plan) / seconds:,.0f} req/s, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms\n"
        f"  5xx {outcomes['5xx']}; connection errors {outcomes['connection error']}; "
        f"malformed answered 4xx {outcomes['bad 4xx']}/{bad_count}; "
        f"good answered with the batch predictor's labels {outcomes['good correct']}/{good_count}\n"
        f"  server RSS {rss_start:,.0f} MB at start, {rss_end:,.0f} MB at end"
    )


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    bin_dir = Path(sys.executable).parent
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        work = Path(scratch)
        (work / "mlflow").mkdir()
        tracking_uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
        artifacts = (work / "mlflow" / "artifacts").as_uri()
        started = time.perf_counter()
        version = register_trained_cnn(work, tracking_uri, artifacts)
        model_uri = f"models:/{NAME}/{version}"
        trained_in = time.perf_counter() - started

        rows = _validated(sample_data("test.csv.gz"), work, require_label=False)
        pixels = pd.read_parquet(rows, columns=PIXEL_COLUMNS).to_numpy(dtype=np.uint8)
        batch_predict.batch_predict(
            rows, work / "sub.csv", work / "probs.parquet", model_uri, tracking_uri
        )
        expected = pd.read_csv(work / "sub.csv")["Label"].to_numpy()
        truth = pd.read_csv(sample_data("test_labels.csv.gz"))["Label"].to_numpy()

        digits_port, mlflow_port = _free_port(), _free_port()
        digits = start(
            [str(bin_dir / "digits"), "serve", "--model-uri", model_uri, "--mlflow-uri",
             tracking_uri, "--port", str(digits_port)],
            "/v2/health/ready", digits_port, work / "digits.log",
        )  # fmt: skip
        mlflow = start(
            [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
             "local", "--host", "127.0.0.1", "--port", str(mlflow_port)],
            "/ping", mlflow_port, work / "mlflow.log",
            # It starts `uvicorn` by name: the venv's bin must be on PATH.
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
                 "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        )  # fmt: skip
        try:
            digits_path, mlflow_path = f"/v2/models/{NAME}/infer", "/invocations"
            results = {}
            for server, port, path, encode in (
                ("digits", digits_port, digits_path, digits_body),
                ("mlflow", mlflow_port, mlflow_path, mlflow_body),
            ):
                singles = [encode(pixels[i : i + 1]) for i in range(len(pixels))]
                latencies = sorted(sequential_latencies(port, path, singles))
                batches = [encode(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]
                rate = concurrent_throughput(
                    port, path, batches * PASSES, len(pixels) * PASSES, CLIENTS
                )
                results[server] = (
                    statistics.median(latencies) * 1000,
                    latencies[int(len(latencies) * 0.99)] * 1000,
                    rate,
                )
            stop(mlflow)
            mlflow = None
            load = load_test(digits_port, NAME, pixels, expected, digits.pid)
        finally:
            stop(digits)
            if mlflow is not None:
                stop(mlflow)

    d50, d99, d_rate = results["digits"]
    m50, m99, m_rate = results["mlflow"]
    speedup, latency_gain = d_rate / m_rate, m50 / d50
    print(
        f"serve_bench: {NAME} v{version} (fast recipe, {EPOCHS} epochs on the sample, trained "
        f"and registered in {trained_in:.0f} s; held-out accuracy "
        f"{(expected == truth).mean():.2%}), {len(pixels):,} test digits, {os.cpu_count()} CPU "
        f"cores, load average {load_before:.1f} before the run"
    )
    print(f"{'':28}{'digits serve':>16}{'mlflow models serve':>22}")
    print(f"{'batch 1, sequential  p50':28}{d50:>13.1f} ms{m50:>19.1f} ms")
    print(f"{'                     p99':28}{d99:>13.1f} ms{m99:>19.1f} ms")
    print(f"{f'batch {BATCH}, {CLIENTS} clients  img/s':28}{d_rate:>16,.0f}{m_rate:>22,.0f}")
    print(
        f"ratio: p50 at batch 1 {latency_gain:.1f}x lower ({d50:.1f} ms: goal <= 10 ms "
        f"{'met' if d50 <= 10 else 'NOT met'}); images/s at batch {BATCH} {speedup:.1f}x "
        f"(goal >= 10x {'met' if speedup >= 10 else 'NOT met'})"
    )
    print(load)


if __name__ == "__main__":
    main()
