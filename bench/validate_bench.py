"""Is ingest + validate within 2x of a plain pyarrow.csv.read_csv, in bounded memory?

    python bench/validate_bench.py            # 60,000 x 785 CSV tiled from the sample
    python bench/validate_bench.py --large    # also a 1 GiB CSV (585,000 rows): peak RSS vs budget

Each measurement runs in its own child process, which reports its wall time (the work only,
imports excluded) and its own peak RSS, so the two readers do not share a heap. Each side
runs --repeat times, alternating; the best time and the highest peak are printed.
"""

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Peak RSS of ingest + validate, whatever the file size: pyarrow's ~35 read-ahead 4 MiB parse
# blocks, one batch's int16 and uint8 copies, the Parquet writers, and the interpreter with
# pyarrow and numpy loaded; the only part that grows with the file is 8 bytes per valid row
# (duplicate detection): 4.6 MiB at 600,000 rows.
MEMORY_BUDGET_MIB = 512


def make_csv(path: Path, rows: int) -> Path:
    """Tile the bundled sample's 8,000 labeled rows to ``rows`` rows (plain CSV)."""
    from digits.data import sample_data

    with gzip.open(sample_data("train.csv.gz"), "rb") as handle:
        header, *lines = handle.read().splitlines(keepends=True)
    with open(path, "wb") as out:
        out.write(header)
        for start in range(0, rows, len(lines)):
            out.writelines(lines[: min(len(lines), rows - start)])
    return path


def _child(mode: str, csv_path: str) -> None:
    """Run one measurement in this process; print its seconds and peak RSS as JSON."""
    if mode == "read_csv":
        import pyarrow.csv as pa_csv

        started = time.perf_counter()
        rows = pa_csv.read_csv(csv_path).num_rows
    else:
        from digits.app.validation import check_csv

        started = time.perf_counter()
        check = check_csv(csv_path)  # the pipeline's ingest + validate, as `digits validate`
        if check.error:
            raise SystemExit(f"validate_bench: {check.error}")
        rows = check.report.valid_rows
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "rows": rows}))


def measure(mode: str, csv_path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(csv_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(csv_path: Path, repeat: int, with_baseline: bool = True) -> dict:
    modes = ["read_csv", "ingest+validate"] if with_baseline else ["ingest+validate"]
    runs = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            runs[mode].append(measure(mode, csv_path))
    size_mib = csv_path.stat().st_size / 2**20
    print(f"{csv_path.name}: {runs[modes[-1]][0]['rows']:,} rows, {size_mib:,.0f} MiB")
    best = {}
    for mode, results in runs.items():
        seconds = min(r["seconds"] for r in results)
        peak = max(r["peak_mib"] for r in results)
        best[mode] = (seconds, peak)
        print(f"  {mode:<16} {seconds:6.2f} s   peak RSS {peak:7.0f} MiB   (best of {repeat})")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="Also a 1 GiB file (585,000 rows).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per side (default 3).")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    with tempfile.TemporaryDirectory(prefix="validate-bench-") as scratch:
        small = make_csv(Path(scratch) / "train_60000.csv", 60_000)
        best = compare(small, args.repeat)
        ratio = best["ingest+validate"][0] / best["read_csv"][0]
        print(f"ratio {ratio:.2f}  (ingest+validate / read_csv; goal <= 2)")
        small.unlink()
        if args.large:
            # The sample's rows average 1.83 KiB, so 1 GiB is 585,000 rows (350,000 make 610 MiB).
            large = make_csv(Path(scratch) / "train_585000.csv", 585_000)
            _, peak = compare(large, 1, with_baseline=False)["ingest+validate"]
            verdict = "within" if peak <= MEMORY_BUDGET_MIB else "OVER"
            print(
                f"peak RSS {peak:.0f} MiB on the 1 GiB file: {verdict} the budget of "
                f"{MEMORY_BUDGET_MIB} MiB"
            )


if __name__ == "__main__":
    main()
