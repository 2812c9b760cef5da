"""The built-in synthetic sample: how long a fresh clone waits for it (issue 1's promise:
about two seconds), generation and the gzip'd CSV writes apart.

Run with ``uv run python bench/bench_sample.py [--repeat N]``. No peer does this work;
beside it, in the same run, the time pandas takes to read the written daily file back
(what every later command pays instead, from the cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from trimtab.data import sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; date: {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC"
    )
    generate, whole, read = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        sample.generate(sample.SEED)
        generate.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            sample.write_sample(folder)
            whole.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pd.read_csv(Path(folder) / sample.DAILY_FILE)
            read.append(time.perf_counter() - t0)
    med = statistics.median
    print(
        f"sample, median of {args.repeat}: generate {med(generate):.3f} s, generate and write "
        f"{med(whole):.3f} s (writes {med(whole) - med(generate):.3f} s); reading the daily "
        f"file back with pandas {med(read):.3f} s"
    )


if __name__ == "__main__":
    main()
