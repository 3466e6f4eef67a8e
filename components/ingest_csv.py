"""Step 1: fetch a Kaggle-format CSV from a path or URL, once, and check it is a CSV at all."""

from pathlib import Path

from digits.artifacts import RAW_CSV_NAMES, SOURCE_INFO_FILENAME, SourceInfo
from digits.errors import IngestError, NotACsvError, SourceNotFoundError
from digits.sources import EXPECTED_FILE, RETRY_BUDGET_S, one_line, open_source, with_retries

_CHUNK = 1 << 20
_HEAD = 1 << 16  # bytes sniffed for the header line; Kaggle's is under 8 KB
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_DELIMITERS = {";": "`;`", "\t": "tab", "|": "`|`", " ": "space"}


def ingest_csv(
    source_uri: str,
    output_path: Path,
    fingerprint: str = "",
    retry_budget_s: float = RETRY_BUDGET_S,
) -> SourceInfo:
    """Copy ``source_uri`` (a path or fsspec URL) into the directory ``output_path``.

    The source bytes are read once, streamed to disk in 1 MiB chunks while their sha256 is
    taken (the dataset digest); a remote read that fails transiently starts over, with backoff,
    for up to ``retry_budget_s`` seconds. Compression is recognized by content, not name: gzip
    is kept as ``rows.csv.gz`` (pyarrow decompresses it by that suffix), a zip's single CSV is
    extracted to ``rows.csv``. The first 64 KiB are then checked to be a comma-separated text
    file, so a wrong file fails here with one line; rows and columns are checked by
    validate_data. ``fingerprint`` is what the pipeline's fingerprint step saw (it keys the
    cache); a ``sha256:`` one must match the bytes read, or the file changed in between.

    Raises:
        SourceNotFoundError: the path or URL does not exist or cannot be reached.
        NotACsvError: the file is empty, binary, not comma-separated, or a zip without exactly
            one CSV.
        IngestError: no filesystem driver for the URL's scheme, or the file changed between
            the fingerprint and the read.
    """
    import os

    output_path.mkdir(parents=True, exist_ok=True)
    fetched = output_path / "source.part"
    sha256, size = with_retries(
        source_uri, lambda: _copy_source(source_uri, fetched), retry_budget_s
    )
    if fingerprint.startswith("sha256:") and fingerprint != f"sha256:{sha256}":
        raise IngestError(
            f"{source_uri}: changed while the pipeline read it (fingerprint "
            f"{fingerprint[7:19]}, read {sha256[:12]}); rerun once the file is written"
        )

    with open(fetched, "rb") as handle:
        magic = handle.read(4)
    if magic.startswith(_GZIP_MAGIC):
        compression, rows = "gzip", output_path / RAW_CSV_NAMES[1]
        os.replace(fetched, rows)
    elif magic in _ZIP_MAGICS:
        compression, rows = "zip", output_path / RAW_CSV_NAMES[0]
        _extract_single_csv(fetched, rows, source_uri)
        fetched.unlink()
    else:
        compression, rows = "none", output_path / RAW_CSV_NAMES[0]
        os.replace(fetched, rows)
    _check_text_csv(rows, source_uri)

    info = SourceInfo(source_uri, sha256, size, compression, fingerprint)
    info.write(output_path / SOURCE_INFO_FILENAME)
    return info


def _copy_source(source_uri: str, target: Path) -> tuple[str, int]:
    """(sha256, size) of the bytes copied from ``source_uri`` to ``target``, read once."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open_source(source_uri) as source, open(target, "wb") as copy:
        try:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                copy.write(chunk)
                size += len(chunk)
        except OSError as error:
            raise SourceNotFoundError(
                f"{source_uri}: reading failed after {size} bytes ({one_line(error)}); "
                "check the connection and that the URL serves the whole file"
            ) from error
    return digest.hexdigest(), size


def _extract_single_csv(archive: Path, target: Path, source_uri: str) -> None:
    import shutil
    import zipfile

    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [
                info
                for info in bundle.infolist()
                if not info.is_dir() and not info.filename.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                names = ", ".join(info.filename for info in members[:5]) or "nothing"
                raise NotACsvError(
                    f"{source_uri}: the zip holds {len(members)} files ({names}); expected "
                    "exactly one CSV. Zip the one CSV alone, or pass the CSV itself"
                )
            with bundle.open(members[0]) as inner, open(target, "wb") as out:
                shutil.copyfileobj(inner, out, _CHUNK)
    except zipfile.BadZipFile as error:
        raise NotACsvError(
            f"{source_uri}: a damaged zip ({one_line(error)}); download it again"
        ) from error


def _check_text_csv(rows: Path, source_uri: str) -> None:
    """Whole-file checks on the first 64 KiB: not empty, text, a header line, commas."""
    import codecs
    import gzip

    try:
        with (gzip.open if rows.suffix == ".gz" else open)(rows, "rb") as handle:
            head = handle.read(_HEAD)
    except (OSError, EOFError) as error:
        raise NotACsvError(
            f"{source_uri}: a damaged gzip file ({one_line(error)}); download it again"
        ) from error
    head = head.removeprefix(codecs.BOM_UTF8)
    if not head.strip():
        raise NotACsvError(f"{source_uri}: the file is empty; expected {EXPECTED_FILE}")
    try:
        # Incremental: a multi-byte character cut at the 64 KiB boundary is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, head.index(b"\x00"), 0, "NUL byte")
    except UnicodeDecodeError as error:
        raise NotACsvError(
            f"{source_uri}: not a text file (byte {head[error.start]:#04x} at offset "
            f"{error.start} is not UTF-8 text); expected {EXPECTED_FILE}"
        ) from error
    header = head.lstrip(b"\r\n").split(b"\n", 1)[0].decode("utf-8", "replace")
    if len(header) >= _HEAD - 1:
        raise NotACsvError(
            f"{source_uri}: no line break in the first 64 KiB, so no header line; "
            f"expected {EXPECTED_FILE}"
        )
    commas = header.count(",")
    delimiter = max(_DELIMITERS, key=header.count)
    if header.count(delimiter) > commas:
        raise NotACsvError(
            f"{source_uri}: looks {_DELIMITERS[delimiter]}-separated (the header has "
            f"{header.count(delimiter)} of those, {commas} commas); expected comma-separated "
            "values. Re-export the file with ',' as the separator"
        )


def component(image: str):
    """Build the KFP component that runs :func:`ingest_csv` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def ingest_csv(source_uri: str, fingerprint: str, dataset: Output[Dataset]):
        """Fetch a Kaggle-format CSV (path or URL) once; record its sha256.

        ``fingerprint`` (the fingerprint step's output) makes the cache key follow the content.
        """
        from dataclasses import asdict
        from pathlib import Path

        from digits.components.ingest_csv import ingest_csv as run

        dataset.metadata.update(asdict(run(source_uri, Path(dataset.path), fingerprint)))

    return ingest_csv
