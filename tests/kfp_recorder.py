"""A recording fake of the KFP v2beta1 REST API, as kfp.Client 2.17.3 calls it.

It keeps state (experiments, runs, pipelines, pipeline versions, recurring runs), so a list or
get after a create sees what was created, and records every request it gets. Paths, query names,
the multipart upload field and JSON bodies follow the generated ``kfp_server_api`` 2.17.3 and the
KFP backend's answers (snake_case fields; ``recurringRuns`` in the list answer, as the proto names
it; a version's ``pipeline_spec`` nested with its ``platform_spec``; 409 for a second version of
the same name in one pipeline, as the upload server answers).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict  # names in lower case
    body: dict | None  # JSON bodies
    files: dict = field(default_factory=dict)  # multipart: field -> (filename, bytes)


@dataclass
class FakeKfp:
    """What the server holds and answers; every request it got is in ``requests``."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    run_states: list[str] = field(default_factory=lambda: ["PENDING"])
    refuse_with: int | None = None  # answer every request with this HTTP status
    list_versions_without_spec: bool = False  # version lists leave the IR out (GET has it)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    _clock: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "DELETE")]

    def now(self) -> str:
        """A strictly increasing creation time, so 'newest' is well defined."""
        return f"2026-01-01T00:{next(self._clock):02d}:00Z"

    # What tests set up directly, as if created earlier.
    def add_pipeline(self, name: str, namespace: str = "") -> dict:
        pipeline_id = f"pipeline-{len(self.pipelines) + 1}"
        pipeline = {
            "pipeline_id": pipeline_id,
            "display_name": name,
            "name": name,
            "namespace": namespace,
            "created_at": self.now(),
        }
        self.pipelines[pipeline_id] = pipeline
        return pipeline

    def add_version(
        self, pipeline_id: str, name: str, package: bytes, description: str = ""
    ) -> dict:
        docs = [doc for doc in yaml.safe_load_all(package) if doc is not None]
        spec = docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}
        version_id = f"version-{len(self.versions) + 1}"
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "display_name": name,
            "name": name,
            "description": description,
            "created_at": self.now(),
            "pipeline_spec": json.loads(json.dumps(spec)),
        }
        self.versions[version_id] = version
        return version

    def add_experiment(self, name: str) -> dict:
        experiment_id = f"exp-{len(self.experiments) + 7}"
        experiment = {"experiment_id": experiment_id, "display_name": name}
        self.experiments[experiment_id] = experiment
        return experiment


def _lower_keys(headers) -> dict:
    return {name.lower(): value for name, value in headers.items()}


def _matches(item: dict, filter_text: str | None) -> bool:
    """The EQUALS predicates on string values that kfp.Client and digits send."""
    if not filter_text:
        return True
    for predicate in json.loads(filter_text).get("predicates", []):
        if predicate.get("operation") not in ("EQUALS", 1):  # kfp.Client sends the number
            raise ValueError(f"the fake handles EQUALS only, got {predicate}")
        value = predicate.get("stringValue", predicate.get("string_value"))
        if str(item.get(predicate["key"])) != value:
            return False
    return True


def _multipart(content_type: str, data: bytes) -> dict:
    message = message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + data, policy=HTTP
    )
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    }


def answer_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Send ``body`` as a JSON answer with ``status`` (shared by the recording fakes)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _handler(kfp: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, body: dict) -> None:
            answer_json(self, status, body)

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type") or ""
            body, files = None, {}
            if content_type.startswith("multipart/form-data"):
                files = _multipart(content_type, data)
            elif data:
                body = json.loads(data)
            kfp.requests.append(
                Recorded(method, path, query, _lower_keys(self.headers), body, files)
            )
            if kfp.refuse_with:
                self._answer(kfp.refuse_with, {"error": "denied", "code": 16})
                return
            status, answer = self._route(method, path, query, body, files)
            self._answer(status, answer)

        def _route(self, method, path, query, body, files):
            one = {name: values[0] for name, values in query.items()}
            route = (method, path)
            if route == ("GET", f"{API}/healthz"):
                return 200, {"multi_user": False}

            # Experiments
            if route == ("GET", f"{API}/experiments"):
                found = [e for e in kfp.experiments.values() if _matches(e, one.get("filter"))]
                return 200, ({"experiments": found, "total_size": len(found)} if found else {})
            if route == ("POST", f"{API}/experiments"):
                return 200, kfp.add_experiment(body["display_name"])

            # Runs
            if route == ("POST", f"{API}/runs"):
                run_id = f"run-{len(kfp.runs) + 42}"
                kfp.runs[run_id] = {**body, "run_id": run_id, "state": "PENDING"}
                return 200, kfp.runs[run_id]
            if method == "GET" and (match := re.fullmatch(rf"{API}/runs/([^/]+)", path)):
                if match[1] not in kfp.runs:
                    return 404, {"error": f"run {match[1]} not found", "code": 5}
                state = kfp.run_states.pop(0) if len(kfp.run_states) > 1 else kfp.run_states[0]
                run = {"run_id": match[1], "state": state}
                if state == "FAILED":
                    run["error"] = {"code": 2, "message": "train-model: OOMKilled"}
                return 200, run

            # Pipelines and their versions
            if route == ("GET", f"{API}/pipelines"):
                found = [
                    p
                    for p in kfp.pipelines.values()
                    if _matches(p, one.get("filter"))
                    and p.get("namespace", "") == one.get("namespace", "")
                ]
                return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
            if route == ("POST", f"{API}/pipelines"):
                name = body.get("display_name") or body.get("name")
                namespace = body.get("namespace") or ""
                if any(
                    p["display_name"] == name and p.get("namespace", "") == namespace
                    for p in kfp.pipelines.values()
                ):
                    return 409, {"error": f"pipeline {name} already exists", "code": 6}
                return 200, kfp.add_pipeline(name, namespace)
            if route == ("POST", f"{API}/pipelines/upload"):
                filename, package = files["uploadfile"]
                name = one.get("display_name") or one.get("name") or filename
                if any(p["display_name"] == name for p in kfp.pipelines.values()):
                    return 409, {"error": "Failed to create a pipeline and a pipeline version"}
                pipeline = kfp.add_pipeline(name, one.get("namespace", ""))
                pipeline["description"] = one.get("description", "")
                kfp.add_version(pipeline["pipeline_id"], name, package, one.get("description", ""))
                return 200, pipeline
            if route == ("POST", f"{API}/pipelines/upload_version"):
                pipeline_id = one.get("pipelineid")
                if pipeline_id not in kfp.pipelines:
                    return 400, {"error": "Failed to create a pipeline version"}
                filename, package = files["uploadfile"]
                name = one.get("display_name") or one.get("name") or filename
                if any(
                    v["pipeline_id"] == pipeline_id and v["name"] == name
                    for v in kfp.versions.values()
                ):
                    return 409, {"error": "Failed to create a pipeline version"}
                return 200, kfp.add_version(pipeline_id, name, package, one.get("description", ""))
            if method == "GET" and (match := re.fullmatch(rf"{API}/pipelines/([^/]+)", path)):
                if match[1] not in kfp.pipelines:
                    return 404, {"error": f"pipeline {match[1]} not found", "code": 5}
                return 200, kfp.pipelines[match[1]]
            if method == "GET" and (
                match := re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", path)
            ):
                found = [
                    {k: x for k, x in v.items() if k != "pipeline_spec"}
                    if kfp.list_versions_without_spec
                    else v
                    for v in kfp.versions.values()
                    if v["pipeline_id"] == match[1] and _matches(v, one.get("filter"))
                ]
                return 200, (
                    {"pipeline_versions": found, "total_size": len(found)} if found else {}
                )
            if method == "GET" and (
                match := re.fullmatch(rf"{API}/pipelines/([^/]+)/versions/([^/]+)", path)
            ):
                version = kfp.versions.get(match[2])
                if version is None or version["pipeline_id"] != match[1]:
                    return 404, {"error": f"pipeline version {match[2]} not found", "code": 5}
                return 200, version

            # Recurring runs
            if route == ("POST", f"{API}/recurringruns"):
                recurring_id = f"recurring-{len(kfp.recurring_runs) + 1}"
                enabled = body.get("mode", "ENABLE") == "ENABLE"
                kfp.recurring_runs[recurring_id] = {
                    **body,
                    "recurring_run_id": recurring_id,
                    "status": "ENABLED" if enabled else "DISABLED",
                    "created_at": kfp.now(),
                }
                return 200, kfp.recurring_runs[recurring_id]
            if route == ("GET", f"{API}/recurringruns"):
                found = [
                    r
                    for r in kfp.recurring_runs.values()
                    if _matches(r, one.get("filter"))
                    and r.get("experiment_id") == one.get("experiment_id", r.get("experiment_id"))
                ]
                return 200, ({"recurringRuns": found, "total_size": len(found)} if found else {})
            if match := re.fullmatch(rf"{API}/recurringruns/([^/:]+)(:enable|:disable)?", path):
                recurring = kfp.recurring_runs.get(match[1])
                if recurring is None:
                    return 404, {"error": f"recurring run {match[1]} not found", "code": 5}
                if method == "GET" and not match[2]:
                    return 200, recurring
                if method == "POST" and match[2]:
                    enable = match[2] == ":enable"
                    recurring["mode"] = "ENABLE" if enable else "DISABLE"
                    recurring["status"] = "ENABLED" if enable else "DISABLED"
                    return 200, {}
                if method == "DELETE" and not match[2]:
                    del kfp.recurring_runs[match[1]]
                    return 200, {}
            return 404, {"error": f"no route {method} {path}"}

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


@contextlib.contextmanager
def running():
    """A fake KFP API on 127.0.0.1 for the duration of the block."""
    kfp = FakeKfp(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kfp))
    kfp.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield kfp
    finally:
        server.shutdown()
        server.server_close()
