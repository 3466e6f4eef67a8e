"""`digits serve`: one registered model version behind KServe's Python model server.

The model URI (default ``models:/digits-cnn@champion``) is resolved ONCE, at start, to an exact
version; every response names that version (``model_version`` in the body, ``X-Model-Version``
header). ``POST /v2/repository/models/<name>/load`` or SIGHUP re-resolves the URI and swaps the
model in when the alias has moved (logged as ``digits-cnn: v1 -> v2``); requests keep being served
by the old version while the new one loads.

Input contract (both protocols), enforced before the model sees anything:

- one request carries a batch of 1 to ``--max-batch`` (default 1024) images;
- an image is 28×28 values (rows of 28) or 784 values in row-major order (Kaggle's pixel0..783);
- values are UINT8 integers 0-255, which the server divides by 255 (as the pipeline's
  normalize step does), or FP32 numbers in [0, 1], taken as they are; never send already
  divided values as UINT8 nor 0-255 values as FP32: nothing is divided twice;
- v2 (Open Inference Protocol), ``POST /v2/models/<name>/infer``, JSON only::

      {"inputs": [{"name": "images", "datatype": "UINT8" | "FP32",
                   "shape": [n, 28, 28] | [n, 28, 28, 1] | [n, 784],
                   "data": [... n*784 values, flat or nested ...]}]}

  answers ``outputs`` ``probabilities`` (FP32 [n, 10]) and ``label`` (INT64 [n]);
- v1, ``POST /v1/models/<name>:predict``: ``{"instances": [image, ...]}``; v1 has no datatype,
  so JSON integers are UINT8 and numbers written with a fraction or exponent (``0.5``, ``1.0``)
  are FP32; answers ``{"predictions": [{"label": d, "probabilities": [10 floats]}, ...]}``.

Anything else (wrong shape, datatype, values out of range, NaN or infinity, an empty or too large
batch, malformed JSON, a content type other than application/json, KServe's binary tensor
extension) is answered 4xx with ``{"error": "<one line naming the problem and the expected
form>"}``; no part of the payload is echoed back. The model is called directly (Keras'
``predict_on_batch``, scikit-learn's ``predict_proba``), the same predictor the batch step loads
(:func:`digits.registry.load_logged_predictor`), so a digit gets the same probabilities here as
from the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.data import IMAGE_SIDE, PIXEL_COUNT, scale_pixels
from digits.kserve_compat import import_kserve
from digits.predictor import PREDICT_BATCH_SIZE, Predictor
from digits.registry import ModelVersionRef

# kserve reads sys.argv when imported: import it through kserve_compat, before its submodules.
kserve = import_kserve()

from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import ORJSONResponse  # noqa: E402
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING  # noqa: E402
from kserve.errors import InvalidInput, ModelNotFound  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402

DEFAULT_MAX_BATCH = 1024
VERSION_HEADER = "X-Model-Version"
INPUT_NAME = "images"
DATATYPES = ("UINT8", "FP32")
SHAPES = "[n, 28, 28], [n, 28, 28, 1] or [n, 784]"
# A JSON float takes at most ~24 bytes with its separator ("0.0039215686274509803, ").
_BYTES_PER_VALUE = 24
log = logging.getLogger("digits.serve")


def v2_expected(max_batch: int) -> str:
    return (
        f'expected {{"inputs": [{{"name": "{INPUT_NAME}", "datatype": "UINT8" (0-255) or "FP32" '
        f'(0-1), "shape": {SHAPES} with 1 <= n <= {max_batch}, "data": n*784 values}}]}}'
    )


def v1_expected(max_batch: int) -> str:
    return (
        f'expected {{"instances": [image, ...]}} with 1 to {max_batch} images, each 784 values '
        "or 28 rows of 28, integers 0-255 (UINT8) or decimals 0.0-1.0 (FP32)"
    )


# ---- the input contract -------------------------------------------------------------------------


def images_from_v2(request: InferRequest, max_batch: int) -> np.ndarray:
    """The v2 request's one input as float32 images (n, 28, 28, 1) in [0, 1].

    Raises:
        InvalidInput: one line naming the problem and the expected form.
    """
    expected = v2_expected(max_batch)
    inputs = request.inputs
    if len(inputs) != 1:
        raise InvalidInput(f"{len(inputs)} inputs: {expected}")
    (tensor,) = inputs
    if tensor.datatype not in DATATYPES:
        raise InvalidInput(f"datatype {_quote(tensor.datatype)}: {expected}")
    shape = list(tensor.shape)
    if not _is_image_shape(shape[1:]) or not shape or shape[0] < 0:
        raise InvalidInput(f"shape {_quote(shape)}: {expected}")
    _check_batch_size(shape[0], expected, max_batch)
    data = tensor.data
    if isinstance(data, np.ndarray):  # gRPC / binary paths hand over arrays
        values = data
    elif isinstance(data, list):
        values = _as_array(data, expected)
    else:
        raise InvalidInput(f"data is not a list: {expected}")
    if values.size != math.prod(shape):
        raise InvalidInput(
            f"data holds {values.size} values, shape {shape} needs {math.prod(shape)}: {expected}"
        )
    return _normalize(values.reshape(shape[0], PIXEL_COUNT), tensor.datatype, expected)


def images_from_v1(payload, max_batch: int) -> np.ndarray:
    """The v1 request's ``instances`` as float32 images (n, 28, 28, 1) in [0, 1].

    Raises:
        InvalidInput: one line naming the problem and the expected form.
    """
    expected = v1_expected(max_batch)
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidInput(f"no instances list: {expected}")
    instances = payload["instances"]
    _check_batch_size(len(instances), expected, max_batch)
    values = _as_array(instances, expected)
    if not _is_image_shape(list(values.shape[1:])):
        raise InvalidInput(f"an instance has shape {list(values.shape[1:])}: {expected}")
    datatype = "UINT8" if values.dtype.kind in "iu" else "FP32"
    return _normalize(values.reshape(len(values), PIXEL_COUNT), datatype, expected)


def _is_image_shape(shape: list) -> bool:
    return shape in ([IMAGE_SIDE, IMAGE_SIDE], [IMAGE_SIDE, IMAGE_SIDE, 1], [PIXEL_COUNT])


def _check_batch_size(count: int, expected: str, max_batch: int) -> None:
    if count == 0:
        raise InvalidInput(f"empty batch (0 images): {expected}")
    if count > max_batch:
        raise InvalidInput(f"{count} images is more than --max-batch {max_batch}: {expected}")


def _as_array(data: list, expected: str) -> np.ndarray:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"ragged data (lists of unequal lengths): {expected}") from None
    if values.dtype.kind not in "iuf":  # strings, booleans, nulls, objects
        raise InvalidInput(f"data holds values that are not numbers: {expected}")
    return values


def _normalize(pixels: np.ndarray, datatype: str, expected: str) -> np.ndarray:
    """(n, 784) numbers -> float32 (n, 28, 28, 1) in [0, 1]; UINT8 is divided by 255, once."""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        row = int(np.flatnonzero(~np.isfinite(pixels).all(axis=1))[0])
        raise InvalidInput(f"image {row} holds NaN or infinity: {expected}")
    if datatype == "UINT8":
        bad = (pixels < 0) | (pixels > 255)
        if pixels.dtype.kind == "f":
            bad |= pixels != np.round(pixels)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise InvalidInput(f"image {row}: UINT8 values must be integers 0-255: {expected}")
        images = scale_pixels(pixels)
    else:
        bad = (pixels < 0) | (pixels > 1)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise InvalidInput(
                f"image {row}: FP32 values must be in [0, 1] (send 0-255 as UINT8 integers; the "
                f"server divides by 255): {expected}"
            )
        images = pixels.astype(np.float32)
    return images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)


def _quote(value) -> str:
    """A short, single-line rendering of a request field (a datatype or shape, never data)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


# ---- the served model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedVersion:
    """A loaded model version and the function from images to probabilities."""

    ref: ModelVersionRef
    predict: Predictor


def load_version(
    model_uri: str, tracking_uri: str, batch_size: int = PREDICT_BATCH_SIZE
) -> ServedVersion:
    """Resolve ``model_uri`` to its version now, load it, and warm it up (compiles once)."""
    from digits.registry import load_logged_predictor, resolve_version

    ref = resolve_version(model_uri, tracking_uri)
    predict = load_logged_predictor(ref.uri, tracking_uri, batch_size)
    for count in (1, 2):  # Keras compiles once, then again with the batch dimension relaxed
        predict(np.zeros((count, IMAGE_SIDE, IMAGE_SIDE, 1), np.float32))
    return ServedVersion(ref, predict)


class DigitsModel(kserve.Model):
    """The registered model behind both protocols, pinned to one version until reloaded."""

    def __init__(self, loader: Callable[[], ServedVersion], max_batch: int = DEFAULT_MAX_BATCH):
        self._loader = loader
        self._reload_lock = threading.Lock()
        self.max_batch = max_batch
        self._batcher = _Batcher(max_images=max(max_batch, 512))
        self.served = loader()
        super().__init__(self.served.ref.name, return_response_headers=True)
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def reload(self, reason: str) -> tuple[str, str]:
        """Re-resolve the URI; swap the model in when it now names another version.

        Returns:
            (old version, new version).
        """
        with self._reload_lock:
            old = self.served.ref
            fresh = self._loader()
            if fresh.ref.version != old.version:
                self.served = fresh  # one assignment: a request sees the old or the new model
                log.info("%s: v%s -> v%s (%s, %s)", self.name, old.version, fresh.ref.version,
                         old.requested, reason)  # fmt: skip
            else:
                log.info("%s: v%s unchanged (%s, %s)", self.name, old.version, old.requested,
                         reason)  # fmt: skip
            return old.version, fresh.ref.version

    async def predict(self, payload, headers=None, response_headers=None):
        served = self.served  # this request's version, whatever a reload does meanwhile
        if isinstance(payload, InferRequest):
            images = images_from_v2(payload, self.max_batch)
        elif isinstance(payload, dict):
            images = images_from_v1(payload, self.max_batch)
        else:
            raise InvalidInput(f"the body is not a JSON object: {v1_expected(self.max_batch)}")
        probabilities = np.asarray(await self._batcher.run(served, images), dtype=np.float32)
        labels = probabilities.argmax(axis=1).astype(np.int64)
        if response_headers is not None:
            response_headers[VERSION_HEADER] = served.ref.version
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                model_version=served.ref.version,
                infer_outputs=[
                    InferOutput("probabilities", list(probabilities.shape), "FP32", probabilities),
                    InferOutput("label", [len(labels)], "INT64", labels),
                ],
            )
        return {
            "model_name": self.name,
            "model_version": served.ref.version,
            "predictions": [
                {"label": int(label), "probabilities": row}
                for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True)
            ],
        }

    def get_input_types(self) -> list[dict]:
        return [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ]

    def metadata(self) -> dict:
        """v2 model metadata, plus what was registered: version, run, URIs and the contract."""
        ref = self.served.ref
        return {
            "name": self.name,
            "versions": [ref.version],
            "platform": "mlflow",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {
                "registered_model": ref.name,
                "model_version": ref.version,
                "run_id": ref.run_id,
                "model_uri": ref.uri,
                "requested_uri": ref.requested,
                "input_datatypes": list(DATATYPES),
                "input_shapes": SHAPES,
                "max_batch": self.max_batch,
            },
        }


class _Batcher:
    """Runs the model on every request queued while it was busy, in one call, off the event loop.

    Nothing waits for a batch to fill: a lone request runs at once. Under concurrent requests,
    those that arrive during a model call go into the next one together (up to ``max_images``
    images), and the event loop parses new requests meanwhile. Each request gets its own rows
    back; requests for different versions (around a reload) never share a call.
    """

    def __init__(self, max_images: int):
        self.max_images = max_images
        self.pending: list[tuple[ServedVersion, np.ndarray, asyncio.Future]] = []
        self.draining = False

    async def run(self, served: ServedVersion, images: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((served, images, future))
        if not self.draining:
            self.draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                served = self.pending[0][0]
                group, count = [], 0
                while self.pending and self.pending[0][0] is served:
                    if group and count + len(self.pending[0][1]) > self.max_images:
                        break
                    group.append(self.pending.pop(0))
                    count += len(group[-1][1])
                stacked = np.concatenate([images for _, images, _ in group])
                try:
                    probabilities = await asyncio.to_thread(served.predict, stacked)
                except Exception as error:
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                start = 0
                for _, images, future in group:
                    if not future.done():  # a client that went away
                        future.set_result(probabilities[start : start + len(images)])
                    start += len(images)
        finally:
            self.draining = False


class _Repository(kserve.ModelRepository):
    """KServe's model repository extension: ``load`` re-resolves the URI; unload is refused."""

    def __init__(self, model: DigitsModel):
        super().__init__()
        self.model = model

    async def load(self, name: str) -> bool:
        if name != self.model.name:
            raise ModelNotFound(name)
        await asyncio.to_thread(self.model.reload, "load request")
        return True

    def unload(self, name: str):
        raise InvalidInput(
            f"digits serve keeps its one model loaded; POST /v2/repository/models/{name}/load "
            "re-resolves its URI, stopping the server unloads it"
        )


# ---- the HTTP server ----------------------------------------------------------------------------


def _is_inference(method: str, path: str) -> bool:
    return method == "POST" and (
        (path.startswith("/v2/models/") and path.endswith("/infer"))
        or (path.startswith("/v1/models/") and path.endswith(":predict"))
    )


class _ContractMiddleware:
    """Refuses what the routes would misread, before the body is read; tags every response.

    Inference requests need ``Content-Type: application/json`` (FastAPI would otherwise hand the
    raw bytes on as a binary tensor) and a body under the --max-batch bound; KServe's binary
    tensor extension is refused. Every response gets ``X-Model-Version`` (inference responses
    already carry the version that computed them).
    """

    def __init__(self, app, model: DigitsModel, max_body_bytes: int):
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _is_inference(scope["method"], scope["path"]):
            refusal = self._refusal(dict(scope["headers"]))
            if refusal:
                status, message = refusal
                log.warning("%s %s: %s %s", scope["method"], scope["path"], status, message)
                response = ORJSONResponse({"error": message}, status_code=status)
                response.headers[VERSION_HEADER] = self.model.served.ref.version
                await response(scope, receive, send)
                return

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-model-version" for name, _ in headers):
                    version = self.model.served.ref.version.encode()
                    headers.append((b"x-model-version", version))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)

    def _refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            described = "no content type" if not content_type else "a content type"
            return 415, (
                f"{described} other than application/json: send the request as JSON with "
                "Content-Type: application/json"
            )
        if b"inference-header-content-length" in headers:
            return 415, (
                "binary tensor data (Inference-Header-Content-Length) is not supported: "
                f"{v2_expected(self.model.max_batch)}"
            )
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return 413, (
                f"request body of {int(length)} bytes is over the {self.max_body_bytes} bytes "
                f"that --max-batch {self.model.max_batch} images take; send fewer images a request"
            )
        return None


async def _invalid_input(request, error):
    message = " ".join(str(error).split())  # one line
    if message.startswith("received byte inputs"):  # a JSON string or number as the body
        message = "the body is not a JSON object"
    if _is_inference(request.method, request.url.path) and "expected {" not in message:
        # KServe's own messages (malformed JSON, "instances" not a list) say not what to send.
        v2 = request.url.path.startswith("/v2/")
        max_batch = request.app.state.digits_max_batch
        message += f": {v2_expected(max_batch) if v2 else v1_expected(max_batch)}"
    log.warning("%s %s: 400 %s", request.method, request.url.path, message)
    return ORJSONResponse({"error": message}, status_code=400)


def _validation_error(max_batch: int):
    async def handler(request, error: RequestValidationError):
        # FastAPI's own answer (422) lists every error with its "input": the payload echoed.
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        if first.get("type") == "json_invalid":
            problem, where = "malformed JSON", f"character {first['loc'][-1]}"
        else:
            problem = first.get("msg", "")
        expected = (
            v2_expected(max_batch)
            if request.url.path.startswith("/v2/")
            else v1_expected(max_batch)
        )
        message = f"{problem}{f' at {where}' if where else ''}: {expected}"
        log.warning("%s %s: 400 %s", request.method, request.url.path, message)
        return ORJSONResponse({"error": message}, status_code=400)

    return handler


async def _internal_error(request, error):
    log.error("%s %s: 500", request.method, request.url.path, exc_info=error)
    # No str(error): it may quote the request.
    return ORJSONResponse({"error": "internal error; see the server's log"}, status_code=500)


class _RestServer(kserve.protocol.rest.server.RESTServer):
    """KServe's REST server with the contract's middleware and one-line, payload-free errors."""

    def __init__(self, *args, model: DigitsModel, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model

    def _register_endpoints(self, app):
        model = self.model

        async def model_metadata(model_name: str):
            if model_name != model.name:
                raise ModelNotFound(model_name)
            return model.metadata()

        # Before KServe's own route, which has no version or run id.
        app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app):
        super()._add_exception_handlers(app)
        app.add_exception_handler(InvalidInput, _invalid_input)
        app.add_exception_handler(RequestValidationError, _validation_error(self.model.max_batch))
        app.add_exception_handler(Exception, _internal_error)

    def create_application(self):
        super().create_application()
        app = kserve.model_server.app
        app.state.digits_max_batch = self.model.max_batch
        max_body = self.model.max_batch * PIXEL_COUNT * _BYTES_PER_VALUE + (1 << 20)
        app.add_middleware(_ContractMiddleware, model=self.model, max_body_bytes=max_body)


def default_tracking_uri(output_dir: Path = Path("local_runs")) -> str:
    """$MLFLOW_TRACKING_URI, else the local store that `digits run --output-dir DIR` writes.

    Raises:
        ServingError: neither is there.
    """
    from digits.app.local_run import local_mlflow_store
    from digits.errors import ServingError

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if not (output_dir / "mlflow" / "mlflow.db").is_file():
        raise ServingError(
            f"no MLflow store in {output_dir / 'mlflow'} and no MLFLOW_TRACKING_URI: run "
            "`digits run` first, or pass --mlflow-uri"
        )
    return local_mlflow_store(output_dir)[0]


@dataclass(frozen=True)
class ServeSettings:
    model_uri: str
    tracking_uri: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = DEFAULT_MAX_BATCH


def serve(settings: ServeSettings, on_ready: Callable[[DigitsModel], None] | None = None) -> None:
    """Load the model version now, then serve it until SIGINT/SIGTERM; SIGHUP reloads.

    Raises:
        RegistryLookupError: the URI names nothing the registry holds.
    """
    _configure_logging()
    model = DigitsModel(
        lambda: load_version(settings.model_uri, settings.tracking_uri), settings.max_batch
    )
    repository = _Repository(model)
    server = kserve.ModelServer(
        http_port=settings.port,
        enable_grpc=False,
        registered_models=repository,
        enable_latency_logging=False,
    )
    _quiet_request_logs()
    server.register_model(model)
    rest = _RestServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        settings.port,
        model=model,
    )
    # ModelServer.start would bind 0.0.0.0 and gRPC; this binds the asked address, REST only.
    rest.config.host = settings.host
    if on_ready:
        on_ready(model)

    async def main():
        loop = asyncio.get_running_loop()
        server.setup_event_loop()

        def on_hangup():
            async def reload():
                try:
                    await asyncio.to_thread(model.reload, "SIGHUP")
                except Exception as error:  # keep serving the old version
                    log.error("%s: reload failed, still serving v%s: %s", model.name,
                              model.served.ref.version, error)  # fmt: skip

            loop.create_task(reload())

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        await rest.start()

    asyncio.run(main())


def _quiet_request_logs() -> None:
    """After KServe configured logging: no line per request (uvicorn's access log, KServe's
    timing trace), which costs more than a prediction at batch 1; /metrics has the counts."""
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s digits serve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
