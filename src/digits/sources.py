"""Data sources (a path or an fsspec URL): retried where the network is, fingerprinted by content.

KFP's cache key covers a task's parameter values, the names of its input artifacts, its image
and command, never the bytes behind a URI (``backend/src/v2/cacheutils/cache.go``,
``GenerateCacheKey``; kfp.local's key is the same with artifacts by URI). A file overwritten at
the same URI would be served from the cache. :func:`fingerprint` names the content cheaply (the
object store's ETag or generation, else size and modification time, else a sha256 of the
bytes); the pipeline passes it to ``ingest_csv`` so the cache key moves with the content.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LOCAL_PROTOCOLS = ("file", "local")
# Fields of fsspec's info() that change whenever an object's content does, best first:
# GCS generation and md5, S3 version and ETag, HTTP ETag and Content-MD5.
CONTENT_KEYS = ("generation", "VersionId", "md5Hash", "ETag", "etag", "Content-MD5", "Digest")
# Weaker: a rewrite with the same size within the clock's resolution is missed.
TIME_KEYS = ("Last-Modified", "LastModified", "mtime", "updated", "last_modified")
RETRY_BUDGET_S = 120.0
EXPECTED_FILE = (
    "a comma-separated text file (optionally .gz or .zip) in Kaggle's Digit Recognizer format"
)
_CHUNK = 1 << 20


def is_remote(uri: str) -> bool:
    """Whether reading ``uri`` goes over a network (anything but a local path)."""
    from fsspec.utils import get_protocol

    return get_protocol(uri) not in LOCAL_PROTOCOLS


def is_transient_io_error(error: BaseException | None) -> bool:
    """A failure worth retrying: a refused or dropped connection, a timeout, 408/429/5xx."""
    while error is not None:
        status = getattr(error, "status", None) or getattr(error, "code", None)
        if isinstance(status, int) and (status >= 500 or status in (408, 429)):
            return True
        if isinstance(error, TimeoutError | ConnectionError):
            return True
        if isinstance(error, OSError) and not isinstance(
            error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def with_retries(uri: str, action: Callable[[], T], budget_s: float = RETRY_BUDGET_S) -> T:
    """``action()``, retried with backoff on transient failures while ``uri`` is remote.

    When the budget runs out the last error is raised again with how long it was tried.
    """
    import tenacity

    if not is_remote(uri) or budget_s <= 0:
        return action()
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(budget_s),
        wait=tenacity.wait_exponential_jitter(initial=0.5, max=15),
        retry=tenacity.retry_if_exception(is_transient_io_error),
        reraise=True,
    )
    try:
        return retrying(action)
    except Exception as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        if attempts > 1 and is_transient_io_error(error):
            from digits.errors import DigitsError, SourceNotFoundError

            kind = type(error) if isinstance(error, DigitsError) else SourceNotFoundError
            message = str(error) if isinstance(error, DigitsError) else f"{uri}: {one_line(error)}"
            raise kind(f"{message} (tried {attempts} times in {budget_s:.0f} s)") from error
        raise


def fingerprint(uri: str, budget_s: float = RETRY_BUDGET_S) -> str:
    """A string that changes whenever the content behind ``uri`` does.

    Local files: ``sha256:<hex>`` of the bytes (streamed; ingest takes the same hash). Remote
    objects: the store's own content fields (``etag=...;size=...``), or size and modification
    time, or, when the server reports neither, a sha256 of the bytes.
    """
    import fsspec

    def read_info() -> dict:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            return fs.info(path)
        except Exception as error:
            raise _source_error(uri, error) from error

    if not is_remote(uri):
        return f"sha256:{_sha256(uri)}"
    info = with_retries(uri, read_info, budget_s)
    size = info.get("size")
    content = [f"{key}={info[key]}" for key in CONTENT_KEYS if info.get(key)]
    if content:
        return ";".join([*content, f"size={size}"])
    times = [f"{key}={info[key]}" for key in TIME_KEYS if info.get(key)]
    if times and size is not None:
        return ";".join([*times, f"size={size}"])
    return f"sha256:{with_retries(uri, lambda: _sha256(uri), budget_s)}"


def open_source(uri: str):
    """An open binary file for ``uri``; failures become one-line errors naming the URI.

    Raises:
        SourceNotFoundError: the path or URL does not exist or cannot be reached (the original
            error is the cause, so :func:`is_transient_io_error` still sees it).
        NotACsvError: the path is a directory.
        IngestError: no filesystem driver for the URL's scheme.
    """
    import fsspec

    try:
        return fsspec.open(uri, "rb").open()
    except Exception as error:
        raise _source_error(uri, error) from error


def _source_error(uri: str, error: BaseException) -> Exception:
    from digits.errors import DigitsError, IngestError, NotACsvError, SourceNotFoundError

    if isinstance(error, DigitsError):
        return error
    cause = error.__cause__ if isinstance(error, FileNotFoundError) else None
    if isinstance(error, FileNotFoundError) and (
        cause is None or getattr(cause, "status", None) == 404
    ):
        return SourceNotFoundError(f"{uri}: file not found; check the path or URL")
    if isinstance(error, ImportError):
        return IngestError(
            f"{uri}: no filesystem driver for this URL ({one_line(error)}); "
            "install the matching fsspec extra, e.g. pip install 'digits[cloud]'"
        )
    if isinstance(error, IsADirectoryError):
        return NotACsvError(f"{uri}: is a directory; expected {EXPECTED_FILE}")
    # fsspec's HTTP filesystem reports a refused connection or a 5xx as a FileNotFoundError
    # caused by aiohttp's error (an OSError, or one carrying the status).
    reason = one_line(cause or error)
    return SourceNotFoundError(
        f"{uri}: cannot be reached ({reason}); check the URL, the network and that the server is up"
    )


def _sha256(uri: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open_source(uri) as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
