"""Step 1: read a Kaggle-format CSV from a path or URL into a Parquet dataset."""

from dataclasses import dataclass
from pathlib import Path

from digits.data import SOURCE_ROW_COLUMN
from digits.errors import IngestError


@dataclass(frozen=True)
class IngestSummary:
    source_uri: str
    rows: int
    columns: int


def ingest_csv(source_uri: str, output_path: Path) -> IngestSummary:
    """Copy ``source_uri`` (a path or fsspec URL; ``.gz`` inferred) to Parquet at ``output_path``.

    Every cell is kept as read; a ``source_row`` column (1-based, header excluded) is added so
    later steps can name the offending row and keep Kaggle's ImageId.
    """
    import fsspec
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fsspec.open(source_uri, "rb", compression="infer") as handle:
            frame = pd.read_csv(handle, low_memory=False)
    except FileNotFoundError as error:
        raise IngestError(f"{source_uri}: file not found; check the path or URL") from error
    except ImportError as error:
        raise IngestError(
            f"{source_uri}: no filesystem driver for this URL ({error}); "
            "install the matching fsspec extra, e.g. pip install 'digits[cloud]'"
        ) from error
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise IngestError(
            f"{source_uri}: not a readable CSV ({error}); expected Kaggle's Digit Recognizer "
            "format, a header line then one image per row"
        ) from error

    # Columns with any non-numeric cell come back as objects; strings keep them Parquet-safe
    # and leave the bad cells for validation to report.
    text_columns = frame.select_dtypes(exclude="number").columns
    if len(text_columns):
        frame[text_columns] = frame[text_columns].astype("string")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.add_column(0, SOURCE_ROW_COLUMN, pa.array(np.arange(1, len(frame) + 1)))
    pq.write_table(table, output_path)
    return IngestSummary(source_uri=source_uri, rows=len(frame), columns=frame.shape[1])


def component(image: str):
    """Build the KFP component that runs :func:`ingest_csv` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def ingest_csv(source_uri: str, dataset: Output[Dataset]):
        """Read a Kaggle-format CSV (path or URL) into a Parquet dataset."""
        from pathlib import Path

        from digits.components.ingest_csv import ingest_csv as run

        dataset.metadata.update(vars(run(source_uri, Path(dataset.path))))

    return ingest_csv
