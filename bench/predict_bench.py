"""Does a prediction shard stay within its memory budget, and do 4 shards cost what 1 does?

    python bench/predict_bench.py                 # 1,000,000 rows (about an hour on 2 cores)
    python bench/predict_bench.py --rows 100000   # a quicker look

Builds validated rows by tiling the bundled sample's 2,000 test rows, written as validate_data
writes them (its own Parquet writer: zstd, 32,768-row groups); trains the real CNN for one epoch
on 400 rows of the bundled training sample (or takes ``--model-dir``); then runs batch_predict's
logic function with 1 shard and with 4 shards, **each shard in its own process** (as on a
cluster, one pod per shard), one process at a time, and beside them a plain
``pyarrow.parquet.read_table`` of the file, also in its own process. Each child reports its peak
RSS (VmHWM, the whole process: interpreter, imports, model, data); the time is the
child's wall time as the parent sees it, so start-up, imports and the model load count, as they
do for a pod.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What components/batch_predict.py promises per shard, whatever the file size.
MEMORY_BUDGET_MIB = 1024
SHARDS = 4
RATIO_GOAL = 1.2


def make_rows(path: Path, rows: int) -> Path:
    """``rows`` validated test rows (source_row 1..rows), tiled from the bundled sample."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from digits.components.validate_data import _RowGroupWriter
    from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN, sample_data

    pixels = pd.read_csv(sample_data("test.csv.gz"))[PIXEL_COLUMNS].to_numpy(np.uint8)
    schema = pa.schema(
        [(SOURCE_ROW_COLUMN, pa.int64())] + [(name, pa.uint8()) for name in PIXEL_COLUMNS]
    )
    block = 4_096  # rows per batch handed to the writer, as validate_data hands it parsed blocks
    with _RowGroupWriter(path, schema) as writer:
        for start in range(0, rows, block):
            stop = min(rows, start + block)
            tile = pixels[np.arange(start, stop) % len(pixels)]
            columns = [pa.array(np.arange(start + 1, stop + 1, dtype=np.int64))]
            columns += [pa.array(tile[:, i]) for i in range(tile.shape[1])]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    return path


def train_small_model(work: Path) -> Path:
    """The real CNN after one epoch on 400 rows of the bundled training sample."""
    import pandas as pd

    from digits.components.ingest_csv import ingest_csv
    from digits.components.normalize_and_split import normalize_and_split
    from digits.components.train_model import train_model
    from digits.components.validate_data import validate_data
    from digits.config import TrainConfig
    from digits.data import sample_data

    pd.read_csv(sample_data("train.csv.gz")).head(400).to_csv(work / "train.csv", index=False)
    ingest_csv(str(work / "train.csv"), work / "dataset")
    validate_data(
        work / "dataset",
        work / "valid.parquet",
        work / "rejected.parquet",
        work / "report.json",
        source="train.csv",
        require_label=True,
    )
    normalize_and_split(
        work / "valid.parquet", work / "train.npz", work / "validation.npz", 0.25, seed=2
    )
    train_model(
        work / "train.npz",
        work / "validation.npz",
        work / "model",
        work / "history.json",
        TrainConfig(epochs=1, batch_size=32),
    )
    return work / "model"


def _child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints its rows, work seconds and peak RSS as JSON."""
    if args.child == "read_table":
        import pyarrow.parquet as pq

        started = time.perf_counter()
        rows = pq.read_table(args.rows_path).num_rows
    else:
        from digits.components.batch_predict import CHUNK_ROWS, batch_predict

        out = Path(args.out)
        started = time.perf_counter()
        rows = batch_predict(
            Path(args.rows_path),
            out / f"submission-{args.shard}.csv",
            out / f"probabilities-{args.shard}.parquet",
            model_uri=args.model_dir,
            tracking_uri="",
            shard_index=args.shard,
            shard_count=args.shards,
            chunk_rows=args.chunk_rows or CHUNK_ROWS,
        ).rows
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "work_seconds": seconds, "peak_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that across fork and
    exec, so a child of a parent holding TensorFlow would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(*child_args: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", *child_args],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    return result


def predict_shards(
    rows_path: Path, model_dir: Path, shards: int, out: Path, chunk_rows: int
) -> list[dict]:
    out.mkdir()
    common = ["--rows-path", str(rows_path), "--model-dir", str(model_dir), "--out", str(out)]
    common += ["--chunk-rows", str(chunk_rows)]
    return [
        measure("predict", *common, "--shard", str(index), "--shards", str(shards))
        for index in range(shards)
    ]


def same_predictions(one: Path, many: Path, shards: int) -> str:
    """Whether the shards' files, joined, equal the single shard's."""
    import pandas as pd

    whole = (one / "submission-0.csv").read_bytes()
    parts = [(many / f"submission-{i}.csv").read_bytes() for i in range(shards)]
    joined = parts[0] + b"".join(part.split(b"\n", 1)[1] for part in parts[1:])
    probabilities = pd.concat(
        [pd.read_parquet(many / f"probabilities-{i}.parquet") for i in range(shards)],
        ignore_index=True,
    )
    single = pd.read_parquet(one / "probabilities-0.parquet")
    same_ids = probabilities["ImageId"].equals(single["ImageId"])
    largest = (probabilities.iloc[:, 1:] - single.iloc[:, 1:]).abs().to_numpy().max()
    return (
        f"submission {'identical' if joined == whole else 'DIFFERENT'}, probabilities "
        f"{'same ImageIds' if same_ids else 'DIFFERENT ImageIds'}, largest difference "
        f"{largest:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows to score (1,000,000).")
    parser.add_argument("--model-dir", help="A Model artifact directory (default: train one).")
    parser.add_argument(
        "--chunk-rows", type=int, default=0, help="Rows per chunk (batch_predict's CHUNK_ROWS)."
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows-path", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    with tempfile.TemporaryDirectory(prefix="predict-bench-") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        rows_path = make_rows(work / "valid.parquet", args.rows)
        made = time.perf_counter() - started
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            (work / "training").mkdir()
            model_dir = train_small_model(work / "training")
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(rows_path).metadata
        print(
            f"{metadata.num_rows:,} validated rows, {metadata.num_row_groups} row groups, "
            f"{rows_path.stat().st_size / 2**20:,.0f} MiB Parquet (written in {made:.0f} s); "
            f"model {'from ' + str(model_dir) if args.model_dir else 'the CNN after 1 epoch'}"
        )
        read = measure("read_table", "--rows-path", str(rows_path))
        one = predict_shards(rows_path, model_dir, 1, work / "one", args.chunk_rows)
        many = predict_shards(rows_path, model_dir, SHARDS, work / "many", args.chunk_rows)

        print(f"{'process':<28}{'rows':>11}{'seconds':>10}{'rows/s':>9}{'peak RSS MiB':>14}")

        def line(name: str, result: dict) -> None:
            rate = result["rows"] / result["seconds"]
            print(
                f"{name:<28}{result['rows']:>11,}{result['seconds']:>10.1f}{rate:>9,.0f}"
                f"{result['peak_mib']:>14,.0f}"
            )

        line("pyarrow read_table", read)
        line("batch_predict 1 shard", one[0])
        for index, result in enumerate(many):
            line(f"batch_predict shard {index} of {SHARDS}", result)

        peak = max(result["peak_mib"] for result in one + many)
        verdict = "met" if peak <= MEMORY_BUDGET_MIB else "NOT met"
        print(
            f"per-shard peak RSS: at most {peak:,.0f} MiB (1 shard {one[0]['peak_mib']:,.0f}, "
            f"{SHARDS} shards {max(r['peak_mib'] for r in many):,.0f}); budget "
            f"{MEMORY_BUDGET_MIB:,} MiB {verdict}; read_table alone {read['peak_mib']:,.0f} MiB"
        )
        summed = sum(result["seconds"] for result in many)
        print(
            f"{SHARDS} shards' summed time / 1 shard's time: {summed:.1f} s / "
            f"{one[0]['seconds']:.1f} s = {summed / one[0]['seconds']:.2f} (goal <= {RATIO_GOAL})"
        )
        joined = same_predictions(work / "one", work / "many", SHARDS)
        print(f"{SHARDS} shards joined vs 1 shard: {joined}")


if __name__ == "__main__":
    main()
