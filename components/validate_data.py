"""Step 2: stream the ingested CSV in batches, check every cell, split valid from rejected rows."""

from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.artifacts import RAW_CSV_NAMES, SOURCE_INFO_FILENAME, SourceInfo, ValidationReport
from digits.data import (
    LABEL_COLUMN,
    PIXEL_COLUMNS,
    SOURCE_ROW_COLUMN,
    ColumnLayout,
    resolve_columns,
)
from digits.errors import (
    DataValidationError,
    MissingDigitsError,
    NoDataRowsError,
    TooManyRejectedRowsError,
)

REASON_COLUMN = "rejection_reason"
ROW_TEXT_COLUMN = "row"  # the rejected row's cells as read, comma-joined
# pyarrow's streaming CSV reader reads about 35 blocks ahead of the consumer (measured with
# pyarrow 25), so memory scales with this, never with the file: ~140 MiB of read-ahead at 4 MiB.
BLOCK_BYTES = 4 << 20
ROW_GROUP_ROWS = 32_768  # valid rows per Parquet row group: 25 MiB of uint8 pixels
FIRST_REJECTIONS_KEPT = 10
# Problem codes per cell, in the order a row's reason prefers them (first bad column wins).
OK, MISSING, NOT_A_NUMBER, NOT_AN_INTEGER, OUT_OF_RANGE = range(5)
KINDS = {
    MISSING: "missing value",
    NOT_A_NUMBER: "not a number",
    NOT_AN_INTEGER: "not an integer",
    OUT_OF_RANGE: "out of range",
}
RAGGED = "wrong number of fields"


def validate_data(
    dataset_path: Path,
    valid_path: Path,
    rejected_path: Path,
    report_path: Path,
    source: str,
    require_label: bool,
    max_rejected_fraction: float = 0.0,
    markdown_path: Path | None = None,
) -> ValidationReport:
    """Check the header and every cell of an ingested CSV, reading it in bounded batches.

    Rows whose label (0-9) and 784 pixels (0-255) are all integers in range go to
    ``valid_path`` (Parquet: ``source_row``, ``label`` when training, ``pixel0..pixel783`` as
    uint8, whatever the file's naming or column order). Every other row goes to
    ``rejected_path`` with its ``source_row``, a ``rejection_reason`` and its cells as read;
    rows with too many or too few fields are quarantined the same way instead of failing the
    read. Rows in = valid + rejected, always. The report (JSON, and Markdown when
    ``markdown_path`` is given) is written before any error is raised.

    Raises:
        ColumnError: the header lacks, repeats or adds pixel columns, or lacks ``label``.
        NoDataRowsError: a header and nothing else.
        TooManyRejectedRowsError: more than ``max_rejected_fraction`` of the rows, or all of
            them, were rejected.
        MissingDigitsError: training data without a single valid row of some digit.
    """
    info = SourceInfo.read(dataset_path / SOURCE_INFO_FILENAME)
    csv_path = next(dataset_path / name for name in RAW_CSV_NAMES if (dataset_path / name).exists())
    report = ValidationReport(
        source_uri=info.source_uri,
        source_sha256=info.sha256,
        require_label=require_label,
        max_rejected_fraction=max_rejected_fraction,
    )
    try:
        header, skip_rows = _read_header(csv_path)
        report.has_label = LABEL_COLUMN in header
        layout = resolve_columns(header, require_label, source)
        report.pixel_naming = layout.naming
        report.pixels_reordered = layout.reordered
        report.label_ignored = layout.label_ignored
        report.ignored_columns = list(layout.ignored_columns)
        try:
            tally = _scan(csv_path, layout, skip_rows, valid_path, rejected_path, source, False)
        except _ConversionFailed:
            # Some cell is not an int16: read again as text, judging such cells one by one.
            tally = _scan(csv_path, layout, skip_rows, valid_path, rejected_path, source, True)
        tally.fill(report, with_labels=layout.label_index is not None)
        _check_outcome(report, source)
        report.passed = True
    except DataValidationError as error:
        report.error = str(error)
        raise
    finally:
        report.write(report_path)
        if markdown_path is not None:
            markdown_path.write_text(report.to_markdown())
    return report


class _ConversionFailed(Exception):
    """A cell did not parse as int16 on the fast path."""


def _read_header(csv_path: Path) -> tuple[list[str], int]:
    """(column names, rows before the data) from the first non-empty line; BOM and quotes off."""
    import pyarrow as pa

    with pa.input_stream(str(csv_path)) as stream:  # decompresses by suffix
        head = stream.read(1 << 16)
    lines = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").split("\n")
    blank = 0
    while blank < len(lines) - 1 and not lines[blank].strip():
        blank += 1
    header = [name.strip().strip('"').strip() for name in lines[blank].rstrip("\r").split(",")]
    return header, blank + 1


@dataclass
class _Tally:
    """Running counts of one scan; bounded except 8 bytes per valid row for duplicates."""

    rows_in: int = 0
    valid_rows: int = 0
    rejected_rows: int = 0
    kinds: Counter = field(default_factory=Counter)
    first: list[tuple[int, str]] = field(default_factory=list)
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(10, dtype=np.int64))
    row_hashes: list[np.ndarray] = field(default_factory=list)

    def reject(self, rows: list[int], reasons: list[str], kinds: list[str]) -> None:
        self.rejected_rows += len(rows)
        self.kinds.update(kinds)
        self.first = sorted(self.first + list(zip(rows, reasons, strict=True)))
        del self.first[FIRST_REJECTIONS_KEPT:]

    def fill(self, report: ValidationReport, with_labels: bool) -> None:
        report.rows_in = self.rows_in
        report.valid_rows = self.valid_rows
        report.rejected_rows = self.rejected_rows
        report.rejections = dict(self.kinds.most_common())
        report.first_rejections = [{"source_row": r, "reason": why} for r, why in self.first]
        hashes = np.concatenate(self.row_hashes) if self.row_hashes else np.empty(0, np.uint64)
        report.duplicate_rows = int(len(hashes) - len(np.unique(hashes)))
        if with_labels:
            counts = self.label_counts
            report.label_counts = {str(digit): int(n) for digit, n in enumerate(counts)}
            report.missing_digits = [digit for digit, n in enumerate(counts) if n == 0]
            report.class_balance = float(counts.min() / counts.max()) if counts.max() else None


def _scan(
    csv_path: Path,
    layout: ColumnLayout,
    skip_rows: int,
    valid_path: Path,
    rejected_path: Path,
    source: str,
    as_text: bool,
) -> _Tally:
    """One streaming pass; fast path (``as_text`` False) parses cells straight to int16."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    tally = _Tally()
    names = [f"c{i}" for i in range(len(layout.header))]  # positions: header names may repeat
    used = layout.used_indices
    read_order = sorted(used)
    in_batch = [read_order.index(i) for i in used]  # batch column of each internal column
    checked_names = [layout.header[i] for i in used]
    upper = np.array([9] * (len(used) - len(PIXEL_COLUMNS)) + [255] * len(PIXEL_COLUMNS))
    out_names = ([LABEL_COLUMN] if layout.label_index is not None else []) + PIXEL_COLUMNS
    valid_schema = pa.schema(
        [(SOURCE_ROW_COLUMN, pa.int64())] + [(name, pa.uint8()) for name in out_names]
    )
    rejected_schema = pa.schema(
        [
            (SOURCE_ROW_COLUMN, pa.int64()),
            (REASON_COLUMN, pa.string()),
            (ROW_TEXT_COLUMN, pa.string()),
        ]
    )
    ragged_rows: deque[int] = deque()  # data rows pyarrow skipped, not yet passed in numbering
    ragged_pending: list[tuple[int, str, str]] = []

    def on_ragged_row(row) -> str:
        number = row.number - skip_rows  # pyarrow counts non-empty lines from 1, header too
        ragged_rows.append(number)
        reason = f"{RAGGED}: {row.actual_columns} fields, expected {row.expected_columns}"
        ragged_pending.append((number, reason, row.text))
        return "skip"

    def flush_ragged(writer) -> None:
        if ragged_pending:
            rows, reasons, texts = zip(*ragged_pending, strict=True)
            tally.rows_in += len(rows)
            tally.reject(list(rows), list(reasons), [RAGGED] * len(rows))
            writer.write_batch(
                pa.record_batch([list(rows), list(reasons), list(texts)], schema=rejected_schema)
            )
            ragged_pending.clear()

    read_options = pa_csv.ReadOptions(
        column_names=names, skip_rows=skip_rows, block_size=BLOCK_BYTES, use_threads=False
    )  # one thread: pyarrow gives a skipped row's number only when it parses serially
    parse_options = pa_csv.ParseOptions(quote_char=False, invalid_row_handler=on_ragged_row)
    convert_options = pa_csv.ConvertOptions(
        column_types={names[i]: pa.string() if as_text else pa.int16() for i in used},
        include_columns=[names[i] for i in read_order],
        strings_can_be_null=True,
    )

    def batches():
        reader = pa_csv.open_csv(str(csv_path), read_options, parse_options, convert_options)
        yield from reader

    next_row = 1
    with (
        _RowGroupWriter(valid_path, valid_schema) as valid_writer,
        pq.ParquetWriter(rejected_path, rejected_schema) as rejected_writer,
    ):
        for batch in _guarded(batches(), source, tally, as_text):
            rows = _number_rows(batch.num_rows, next_row, ragged_rows)
            if batch.num_rows:
                next_row = int(rows[-1]) + 1
            tally.rows_in += batch.num_rows
            columns = [batch.column(i) for i in in_batch]
            values, codes = _judge(columns, upper, as_text)
            bad = codes.any(axis=1)
            good = (values[~bad] if bad.any() else values).astype(np.uint8, order="F")
            valid_writer.write_batch(
                pa.record_batch(
                    [pa.array(rows[~bad])] + [pa.array(good[:, j]) for j in range(good.shape[1])],
                    schema=valid_schema,
                )
            )
            tally.valid_rows += len(good)
            tally.row_hashes.append(_row_hashes(good))
            if layout.label_index is not None:
                tally.label_counts += np.bincount(good[:, 0], minlength=10)[:10]
            if bad.any():
                _write_rejected(
                    rejected_writer, rejected_schema, tally, batch, columns, rows, codes, bad,
                    checked_names, upper,
                )  # fmt: skip
            flush_ragged(rejected_writer)
        flush_ragged(rejected_writer)
    return tally


class _RowGroupWriter:
    """Parquet writer gathering batches into row groups of ``ROW_GROUP_ROWS`` rows.

    One row group per parsed block would be 786 column chunks' metadata every ~2,000 rows,
    held in memory until the footer is written: 200 MiB for a 1 GiB CSV.
    """

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        # zstd without dictionaries: about 7 MB per 60,000 rows, as fast to write as snappy.
        self._writer = pq.ParquetWriter(
            path, schema, compression="zstd", use_dictionary=False, write_statistics=False
        )
        self._pending: list = []
        self._rows = 0

    def write_batch(self, batch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            table = pa.Table.from_batches(self._pending)
            self._writer.write_table(table, row_group_size=max(ROW_GROUP_ROWS, table.num_rows))
        self._pending, self._rows = [], 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._flush()
        self._writer.close()


def _guarded(batches, source: str, tally: _Tally, as_text: bool):
    """``batches`` with pyarrow's read errors turned into one-line errors naming the row."""
    import pyarrow as pa

    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            if not as_text and "conversion error" in str(error):
                raise _ConversionFailed from error
            raise _unreadable(source, tally.rows_in, error) from error
        except OSError as error:  # e.g. a truncated gzip stream
            raise _unreadable(source, tally.rows_in, error) from error
        yield batch


def _number_rows(count: int, next_row: int, ragged_rows: deque[int]) -> np.ndarray:
    """Source rows of the next ``count`` parsed rows: onward from ``next_row``, skipping ragged."""
    numbers = np.empty(count, dtype=np.int64)
    filled, row = 0, next_row
    while filled < count:
        while ragged_rows and ragged_rows[0] < row:
            ragged_rows.popleft()
        if ragged_rows and ragged_rows[0] == row:
            ragged_rows.popleft()
            row += 1
            continue
        run = count - filled if not ragged_rows else min(count - filled, ragged_rows[0] - row)
        numbers[filled : filled + run] = np.arange(row, row + run)
        filled, row = filled + run, row + run
    return numbers


def _judge(columns: list, upper: np.ndarray, as_text: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values as int16, problem code per cell), both (rows, checked columns)."""
    import pyarrow as pa

    count = len(columns[0]) if columns else 0
    values = np.zeros((count, len(columns)), dtype=np.int16, order="F")
    codes = np.zeros((count, len(columns)), dtype=np.uint8, order="F")
    for j, column in enumerate(columns):
        if as_text:
            try:
                column = column.cast(pa.int16())
            except pa.ArrowInvalid:
                values[:, j], codes[:, j] = _judge_text(column, upper[j])
                continue
        if column.null_count:
            codes[column.is_null().to_numpy(zero_copy_only=False), j] = MISSING
            column = column.fill_null(0)
        values[:, j] = column.to_numpy()
    out_of_range = (values < 0) | (values > upper)
    codes[out_of_range & (codes == OK)] = OUT_OF_RANGE
    return values, codes


def _judge_text(column, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell by cell for a text column holding something that is not an int16."""
    import pandas as pd

    is_null = column.is_null().to_numpy(zero_copy_only=False)
    texts = column.to_pylist()
    numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")
    numbers = numbers.to_numpy(dtype=np.float64, copy=True)
    # The fast path takes whatever pyarrow parses as an integer, hex ("0x1F") included; take
    # the same here, so a cell's verdict never depends on its neighbours.
    for index in np.flatnonzero(np.isnan(numbers) & ~is_null):
        numbers[index] = _pyarrow_integer(texts[index])
    codes = np.full(len(numbers), OK, dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        codes[(numbers < 0) | (numbers > upper) | np.isinf(numbers)] = OUT_OF_RANGE
        codes[np.isfinite(numbers) & (numbers % 1 != 0)] = NOT_AN_INTEGER
    codes[np.isnan(numbers)] = NOT_A_NUMBER
    codes[is_null] = MISSING
    values = np.where(codes == OK, numbers, 0).astype(np.int16)
    return values, codes


def _pyarrow_integer(text: str) -> float:
    import pyarrow as pa

    try:
        return float(pa.scalar(text).cast(pa.int64()).as_py())
    except pa.ArrowInvalid:  # what a string-to-int64 cast raises for any unparseable text
        return float("nan")


def _write_rejected(writer, schema, tally, batch, columns, rows, codes, bad, names, upper):
    import pyarrow as pa

    indices = np.flatnonzero(bad)
    is_bad = codes[indices] != OK
    first = is_bad.argmax(axis=1)
    extra = is_bad.sum(axis=1) - 1
    reasons, kinds = [], []
    for index, column, more in zip(indices, first, extra, strict=True):
        code = int(codes[index, column])
        cell = columns[column][int(index)].as_py()
        reason = f"{KINDS[code]} in {names[column]}"
        if code in (NOT_A_NUMBER, NOT_AN_INTEGER):
            reason += f": {cell!r}"
        elif code == OUT_OF_RANGE:
            reason += f": {cell} (expected 0-{upper[column]})"
        if more:
            reason += f" (+{more} more bad cells)"
        reasons.append(reason)
        kinds.append(KINDS[code])
    taken = batch.take(pa.array(indices))
    cells = zip(*(column.to_pylist() for column in taken.columns), strict=True)
    texts = [",".join("" if v is None else str(v) for v in row) for row in cells]
    tally.reject(rows[indices].tolist(), reasons, kinds)
    writer.write_batch(pa.record_batch([rows[indices], reasons, texts], schema=schema))


def _row_hashes(pixels: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row (splitmix64 of each 8-byte word, summed, mixed again)."""
    words = np.zeros((len(pixels), -(-pixels.shape[1] // 8) * 8), dtype=np.uint8)
    words[:, : pixels.shape[1]] = pixels
    words = words.view(np.uint64) + np.arange(words.shape[1] // 8, dtype=np.uint64)
    return _splitmix64(_splitmix64(words).sum(axis=1, dtype=np.uint64))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unreadable(source: str, rows_read: int, error: BaseException) -> DataValidationError:
    detail = " ".join(str(error).split())
    return DataValidationError(
        f"{source}: unreadable after row {rows_read} ({detail}); the file is damaged or "
        "truncated: download or export it again"
    )


def _check_outcome(report: ValidationReport, source: str) -> None:
    if report.rows_in == 0:
        raise NoDataRowsError(
            f"{source}: a header but no data rows; expected one image per line after the header"
        )
    fraction = report.rejected_rows / report.rows_in
    if report.valid_rows == 0 or fraction > report.max_rejected_fraction:
        first = report.first_rejections[0]
        raise TooManyRejectedRowsError(
            f"{source}: {report.rejected_rows} of {report.rows_in} rows rejected "
            f"({fraction:.2%}, allowed {report.max_rejected_fraction:.2%}), first at row "
            f"{first['source_row']}: {first['reason']}. Fix those rows, or raise "
            "max_rejected_fraction (--max-rejected-fraction) to drop them; every rejected "
            "row is kept in the 'rejected' artifact"
        )
    if report.missing_digits:
        missing = ", ".join(map(str, report.missing_digits))
        counts = " ".join(f"{digit}:{n}" for digit, n in report.label_counts.items())
        raise MissingDigitsError(
            f"{source}: no valid rows of digit(s) {missing} (rows per digit {counts}); a model "
            "trained on it could never predict them. Add labeled rows of every digit 0-9"
        )


def component(image: str):
    """Build the KFP component that runs :func:`validate_data` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def validate_data(
        dataset: Input[Dataset],
        source: str,
        require_label: bool,
        max_rejected_fraction: float,
        valid: Output[Dataset],
        rejected: Output[Dataset],
        report: Output[Artifact],
        report_markdown: Output[Markdown],
    ):
        """Check every cell in bounded batches; valid rows pass on, rejected rows keep a reason."""
        from pathlib import Path

        from digits.components.validate_data import validate_data as run

        summary = run(
            Path(dataset.path),
            Path(valid.path),
            Path(rejected.path),
            Path(report.path),
            source=source,
            require_label=require_label,
            max_rejected_fraction=max_rejected_fraction,
            markdown_path=Path(report_markdown.path),
        )
        valid.metadata["rows"] = summary.valid_rows
        rejected.metadata["rows"] = summary.rejected_rows
        report.metadata.update(
            {
                "source_uri": summary.source_uri,
                "source_sha256": summary.source_sha256,
                "rows_in": summary.rows_in,
                "duplicate_rows": summary.duplicate_rows,
            }
        )

    return validate_data
