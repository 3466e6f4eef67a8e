"""Step 8: score validated unlabeled rows with one pinned model version (or any model URI).

With ``shard_count`` > 1 the pipeline runs one task per shard (dsl.ParallelFor); shard ``i`` of
``k`` scores rows ``[n*i//k, n*(i+1)//k)`` and ``collect_predictions`` joins the shards into one
submission. Every shard of a run predicts with the same model version: the pipeline passes the
version the promotion gate left as champion, and this step loads ``models:/<name>/<version>``,
never the alias again.

Memory: a shard reads only the Parquet row groups that overlap its rows, one at a time, and
scores them ``CHUNK_ROWS`` at a time, appending each chunk's results to the outputs, so its peak
RSS does not grow with the file or the shard. Budget: **a shard's peak RSS stays under 1 GiB,
whatever the file size** (``bench/predict_bench.py`` measures it). Nearly all of it is
TensorFlow: about 690 MiB with Keras imported and the model loaded, ~880 MiB once it has
predicted 128 images per call (``PREDICT_BATCH_SIZE``; 512 per call took ~160 MiB more for the
same rows/s). A whole shard process peaked at 924-980 MiB on 100,000 rows. The data adds one row
group as Arrow reads it (validate_data writes 32,768-row groups: 25 MiB of pixels, about 50 MiB
of Arrow memory) and one chunk (its uint8 pixels and their float32 images: 15 MiB at 4,096 rows,
with pandas' copies). The pipeline's 4 GiB prediction pods leave room to spare.
"""

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from digits.errors import PredictionError
from digits.predictor import PREDICT_BATCH_SIZE

SUBMISSION_COLUMNS = ["ImageId", "Label"]
# Rows converted and scored per step: 12 MiB of float32 images. Larger chunks buy no speed (the
# CPU time per row is the same from 512 to 16,384 rows per predict call, measured), only memory:
# reading and converting 16,384-row chunks peaked about 240 MiB above 4,096-row ones.
CHUNK_ROWS = 4_096
# Tags set on the pipeline run's MLflow run, saying which model scored the rows.
PREDICTED_WITH_TAG = "predicted_with"
PREDICTED_MODEL_URI_TAG = "predicted_model_uri"
# How MLflow 3.17 reports the files of a model download that failed (ArtifactRepository).
_DOWNLOAD_FAILED = "The following failures occurred while downloading"
_FAILED_FILE = re.compile(r"^##### File .* #####$", re.MULTILINE)
_HTTP_STATUS = re.compile(
    r"too many (\d{3}) error responses|error code (\d{3})|\b(\d{3}) (?:Client|Server) Error"
)

T = TypeVar("T")


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to what it pointed at when prediction started."""

    uri: str  # what to load: pinned to a version when the URI named an alias
    requested: str
    name: str = ""
    version: str = ""

    @property
    def description(self) -> str:
        if self.version:
            return f"{self.name} v{self.version} ({self.requested})"
        return self.requested

    @property
    def short(self) -> str:
        """'digits-cnn v3', or the URI itself when it names no registered version."""
        return f"{self.name} v{self.version}" if self.version else self.uri


@dataclass(frozen=True)
class PredictionSummary:
    rows: int
    predicted_with: str
    model_version: str
    model_uri: str  # what was loaded: models:/<name>/<version> for a registered model
    shard_index: int
    shard_count: int
    predicted_class_counts: dict[str, int]


def champion_uri(registered_model_name: str) -> str:
    return f"models:/{registered_model_name}@champion"


def version_uri(registered_model_name: str, version: str) -> str:
    return f"models:/{registered_model_name}/{version}"


def resolve_model(client, model_uri: str) -> ResolvedModel:
    """Pin ``models:/name@alias`` and ``models:/name/N`` to a version, or say what exists; any
    other URI (``runs:/``, a logged model's ``models:/<id>``) is loaded as it is.

    Raises:
        PredictionError: the registered model, version or alias does not exist; the message
            lists the registered models and their aliases.
    """
    from digits.errors import RegistryLookupError
    from digits.registry import parse_version_uri, resolve_version

    if parse_version_uri(model_uri) is None:
        return ResolvedModel(uri=model_uri, requested=model_uri)
    try:
        found = resolve_version(model_uri, client.tracking_uri, client)
    except RegistryLookupError as error:
        raise PredictionError(
            f"{error}. Pass predict_model_uri naming one of them, or run the training pipeline "
            "first so a champion exists"
        ) from None
    return ResolvedModel(
        uri=version_uri(found.name, found.version),
        requested=model_uri,
        name=found.name,
        version=found.version,
    )


def shard_row_range(num_rows: int, shard_index: int, shard_count: int) -> tuple[int, int]:
    """``(start, end)``: shard ``i`` of ``k`` owns rows ``[n*i//k, n*(i+1)//k)``."""
    return num_rows * shard_index // shard_count, num_rows * (shard_index + 1) // shard_count


def overlapping_row_groups(
    group_rows: Sequence[int], start: int, end: int
) -> tuple[list[int], int]:
    """The row groups that hold any of rows ``[start, end)``, and the file row the first begins."""
    groups, first_row, offset = [], start, 0
    for index, count in enumerate(group_rows):
        if start < end and offset < end and offset + count > start:
            if not groups:
                first_row = offset
            groups.append(index)
        offset += count
    return groups, first_row


def read_shard(
    rows_path: Path, shard_index: int, shard_count: int, chunk_rows: int = CHUNK_ROWS
) -> Iterator:
    """This shard's rows of the validated Parquet, in source order, at most ``chunk_rows`` at
    a time (pyarrow RecordBatches of ``source_row`` and the pixels).

    The row range comes from the footer, and only the row groups overlapping it are read, one
    at a time: memory is bounded by validate_data's row group (32,768 rows, 25 MiB of pixels),
    not by the file. (``iter_batches`` holds a whole row group too, and measured 2x the Arrow
    memory of ``read_row_group``.)
    """
    import pyarrow.parquet as pq

    from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN

    # pre_buffer off: with it, pyarrow fetches the column chunks of every requested row group
    # up front, so memory would grow with the shard (measured: 403 MiB for a 300 MiB file).
    with pq.ParquetFile(rows_path, pre_buffer=False) as parquet:
        metadata = parquet.metadata
        start, end = shard_row_range(metadata.num_rows, shard_index, shard_count)
        group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        groups, position = overlapping_row_groups(group_rows, start, end)
        for group in groups:
            table = parquet.read_row_group(group, columns=[SOURCE_ROW_COLUMN, *PIXEL_COLUMNS])
            first, last = max(start - position, 0), min(end - position, table.num_rows)
            position += table.num_rows
            yield from table.slice(first, last - first).to_batches(max_chunksize=chunk_rows)
            del table  # before the next group is read


def batch_predict(
    rows_path: Path,
    submission_path: Path,
    probabilities_path: Path,
    model_uri: str,
    tracking_uri: str,
    shard_index: int = 0,
    shard_count: int = 1,
    batch_size: int = PREDICT_BATCH_SIZE,
    timeout_s: float = 300,
    mlflow_run_id: str = "",
    requested_uri: str = "",
    chunk_rows: int = CHUNK_ROWS,
) -> PredictionSummary:
    """Predict this shard's rows; ImageId is the row's 1-based position in the source CSV.

    Writes ``ImageId,Label`` as CSV (what Kaggle accepts) and the per-row class probabilities
    (``ImageId, prob_0..prob_9``, float32) as Parquet, in source order, ``chunk_rows`` rows at
    a time. ``model_uri`` is an MLflow model URI (``models:/name/3``, ``models:/name@champion``
    pinned to its version once, ``runs:/<id>/cnn``) or a local model artifact directory.
    ``requested_uri``, when given, is what the user asked for and ``model_uri`` its pinned
    form (the pipeline: the champion, pinned to the version the gate left); it only changes
    the description. With ``mlflow_run_id``, that run gets tags ``predicted_with`` and
    ``predicted_model_uri``. Each talk with MLflow (the model lookup and download, the tags)
    retries a failing server for up to ``timeout_s`` seconds.

    Raises:
        PredictionError: a bad shard index; a model that does not exist; or MLflow that did
            not answer within ``timeout_s`` (one line naming the model URI and the server).
    """
    import numpy as np

    from digits.data import to_image_set
    from digits.tracking import KfpMlflowPlugin

    if not 0 <= shard_index < shard_count:
        raise PredictionError(f"shard {shard_index} of {shard_count}: expected 0 <= index < count")
    plugin = KfpMlflowPlugin.from_environment()  # the server register and promote used
    tracking_uri = plugin.endpoint if plugin else tracking_uri
    resolved, predict = _load_model(model_uri, requested_uri, tracking_uri, batch_size, timeout_s)
    chunks = _chunks_or_empty(read_shard(rows_path, shard_index, shard_count, chunk_rows))
    with _ShardWriter(submission_path, probabilities_path) as writer:
        for batch in chunks:
            images = to_image_set(batch.to_pandas())
            probabilities = predict(images.images) if len(images) else np.zeros((0, 10), np.float32)
            writer.write(images.source_rows, probabilities)
    if mlflow_run_id:
        _tag_run(mlflow_run_id, resolved, tracking_uri, timeout_s)
    return PredictionSummary(
        rows=writer.rows,
        predicted_with=resolved.description,
        model_version=resolved.version,
        model_uri=resolved.uri,
        shard_index=shard_index,
        shard_count=shard_count,
        predicted_class_counts={str(d): int(n) for d, n in enumerate(writer.counts)},
    )


class _ShardWriter:
    """Appends each chunk's ``ImageId,Label`` to the CSV and its probabilities to the Parquet:
    the same files, column for column, as writing the whole shard at once with pandas."""

    def __init__(self, submission_path: Path, probabilities_path: Path):
        import numpy as np

        self.submission_path, self.probabilities_path = submission_path, probabilities_path
        self.rows = 0
        self.counts = np.zeros(10, dtype=np.int64)
        self._csv = None
        self._parquet = None

    def __enter__(self):
        self._csv = open(self.submission_path, "w", newline="")  # noqa: SIM115  (closed on exit)
        return self

    def write(self, source_rows, probabilities) -> None:
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        labels = probabilities.argmax(axis=1)
        submission = pd.DataFrame({"ImageId": source_rows, "Label": labels})
        submission.to_csv(self._csv, index=False, header=self._parquet is None)
        columns = [f"prob_{digit}" for digit in range(probabilities.shape[1])]
        frame = pd.DataFrame(probabilities.astype(np.float32), columns=columns)
        frame.insert(0, "ImageId", source_rows)
        table = pa.Table.from_pandas(frame, preserve_index=False)  # as to_parquet(index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.probabilities_path, table.schema)
        self._parquet.write_table(table)
        self.rows += len(labels)
        self.counts += np.bincount(labels, minlength=10)[:10]

    def __exit__(self, *exc_info) -> None:
        self._csv.close()
        if self._parquet is not None:
            self._parquet.close()


def _chunks_or_empty(batches: Iterator) -> Iterator:
    """``batches``, or one empty batch when there are none: an empty shard still writes both
    files with their header and schema."""
    import pyarrow as pa

    from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN

    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        schema = pa.schema(
            [(SOURCE_ROW_COLUMN, pa.int64())] + [(name, pa.uint8()) for name in PIXEL_COLUMNS]
        )
        yield pa.RecordBatch.from_pylist([], schema=schema)


def _load_model(model_uri, requested_uri, tracking_uri, batch_size, timeout_s):
    """(ResolvedModel, predictor): a local model directory, or MLflow's, with retries."""

    from digits.predictor import load_predictor
    from digits.registry import load_logged_predictor, registry_client
    from digits.tracking import Budget, retry

    requested = requested_uri or model_uri
    if Path(model_uri).is_dir():
        return ResolvedModel(uri=model_uri, requested=requested), load_predictor(
            Path(model_uri), batch_size
        )
    budget = Budget(timeout_s)
    check = "the model URI and the MLflow credentials"
    with _mlflow_session(model_uri, tracking_uri, budget, "loading the model", check):
        client = registry_client(tracking_uri)
        resolved = retry(budget, lambda: resolve_model(client, model_uri))
        resolved = ResolvedModel(resolved.uri, requested, resolved.name, resolved.version)
        predict = retry(
            budget,
            lambda: _transient_download(
                lambda: load_logged_predictor(resolved.uri, tracking_uri, batch_size)
            ),
        )
    return resolved, predict


def _transient_download(load: Callable[[], T]) -> T:
    """``load()``, with a model download that failed on the server's side made retryable.

    MLflow downloads a model's files in parallel and gathers their failures into one
    MlflowException raised on this side, which ``is_transient`` rightly does not retry. When
    every file failed with an answer of 5xx, 408 or 429, or a broken connection, it is raised
    again as a ConnectionError, which ``is_transient`` retries.
    """
    from mlflow.exceptions import MlflowException

    try:
        return load()
    except MlflowException as error:
        failures = _FAILED_FILE.split(error.message)[1:]
        if _DOWNLOAD_FAILED not in error.message or not failures:
            raise
        if not all(_transient_failure(failure) for failure in failures):
            raise
        first_line = error.message.strip().splitlines()[0]
        raise ConnectionError(f"{first_line} {failures[0].strip()}") from error


def _transient_failure(text: str) -> bool:
    """Whether one file's download failure (as MLflow words it) was the server's or the
    network's."""
    statuses = [int(code) for found in _HTTP_STATUS.findall(text) for code in found if code]
    if statuses:
        return all(code >= 500 or code in (408, 429) for code in statuses)
    # No answer at all: refused, reset or timed out (MLflow's words for it, as is_transient's).
    return "failed with exception" in text


def _tag_run(run_id: str, resolved: ResolvedModel, tracking_uri: str, timeout_s: float) -> None:
    """Say on the pipeline run's MLflow run which model predicted (idempotent: a retry or
    another shard sets the same values)."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    from digits.tracking import Budget, retry

    tags = [
        RunTag(PREDICTED_WITH_TAG, resolved.short),
        RunTag(PREDICTED_MODEL_URI_TAG, resolved.uri),
    ]
    budget = Budget(timeout_s)
    doing = f"tagging MLflow run {run_id}"
    with _mlflow_session(resolved.uri, tracking_uri, budget, doing, "mlflow_run_id"):
        client = MlflowClient(tracking_uri)
        retry(budget, lambda: client.log_batch(run_id, tags=tags))


@contextmanager
def _mlflow_session(
    model_uri: str, tracking_uri: str, budget, doing: str, check: str
) -> Iterator[None]:
    """``tracking_session``, its final error turned into one line naming the model URI."""
    from digits.errors import RegistrationError
    from digits.tracking import is_transient, tracking_session

    try:
        with tracking_session(tracking_uri, budget):
            yield
    except RegistrationError as error:
        cause = error.__cause__ or error
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        where = f"{model_uri}: {doing} through MLflow at {tracking_uri} failed"
        if is_transient(cause):
            raise PredictionError(
                f"{where} after retrying for {budget.seconds:.0f} s: {first_line}; check "
                "mlflow_tracking_uri and that the tracking server is reachable, then retry the task"
            ) from cause
        raise PredictionError(f"{where}: {first_line}; check {check}") from cause


def component(image: str):
    """Build the KFP component that runs :func:`batch_predict` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def batch_predict(
        rows: Input[Dataset],
        mlflow_tracking_uri: str,
        registered_model_name: str,
        predict_model_uri: str,
        champion_version: str,
        shard_index: int,
        shard_count: int,
        submission: Output[Dataset],
        probabilities: Output[Dataset],
        mlflow_run_id: str = "",
        mlflow_timeout_s: float = 300,
    ):
        """Kaggle submission (ImageId,Label CSV) plus per-row probabilities (Parquet), one shard.

        Predicts with ``models:/<registered_model_name>/<champion_version>``, the version the
        promotion gate left as champion, so every shard uses the same one; ``predict_model_uri``
        overrides it (an alias there is pinned once). With ``mlflow_run_id`` (this pipeline
        run's MLflow run), that run is tagged with the model that predicted. Each talk with
        MLflow retries a failing server for up to ``mlflow_timeout_s`` seconds.
        """
        from dataclasses import asdict
        from pathlib import Path

        from digits.components.batch_predict import batch_predict as run
        from digits.components.batch_predict import champion_uri, version_uri

        if predict_model_uri:
            model_uri, requested_uri = predict_model_uri, ""
        elif champion_version:
            model_uri = version_uri(registered_model_name, champion_version)
            requested_uri = champion_uri(registered_model_name)
        else:  # no gate ran: the alias, pinned once
            model_uri, requested_uri = champion_uri(registered_model_name), ""
        summary = run(
            Path(rows.path),
            Path(submission.path),
            Path(probabilities.path),
            model_uri=model_uri,
            tracking_uri=mlflow_tracking_uri,
            shard_index=shard_index,
            shard_count=shard_count,
            mlflow_run_id=mlflow_run_id,
            requested_uri=requested_uri,
            timeout_s=mlflow_timeout_s,
        )
        for artifact in (submission, probabilities):
            artifact.metadata.update(asdict(summary))

    return batch_predict
