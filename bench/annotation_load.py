"""Benchmark: lines/s of loading an LPR pair file with every line validated, against the
plain load that only splits each line into its columns.

Writes a synthetic ``--lines`` line file (default 200,000) of each train layout to a temporary
folder: LPR4M (11 columns, JSON list of 10 frame ids, JSON boxes) and LPR750K (10 columns,
Python-literal list of 10 frame paths, as the original's ``str(list)``). Then, in one run,
for each file:

1. plain: the byte-offset index with a check that splits the line on tabs and counts the
   columns (what the load did before lines were validated);
2. validated: ``LPRPairAnnotations``, which decodes every line and checks its columns,
   layout, required fields and frame list syntax, exactly as reading the item would;
3. validated + boxes (LPR4M): the same with ``read_boxes`` (``crop_to_box: true``).

Each is timed ``--repeats`` times, interleaved, and reports its best pass. Prints lines/s of
each, the ratio validated / plain, and the time a 4,013,617-line file (the full LPR4M
release) takes at the validated rate.

Usage: ``python bench/annotation_load.py [--lines 200000] [--repeats 3]``
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmf.common.errors import DataError  # noqa: E402
from mmf.datasets.builders.videotoshop.database import (  # noqa: E402
    LineIndex,
    LPRPairAnnotations,
)

LIVE_ID = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
FULL_RELEASE_LINES = 4013617


def clip_id(index):
    return f"{LIVE_ID}-{1667916122888 + index * 1000}-{1667916252390 + index * 1000}"


def lpr4m_line(index):
    clip = clip_id(index)
    frames = [f"{clip}-{i:04d}" for i in range(10)]
    boxes = [[[4, 6, 120, 130]] for _ in range(10)]
    return "\t".join([
        clip, json.dumps(frames), json.dumps(boxes), f"a1b2c3d4-0000-4000-8000-{index:012d}",
        "red leather bag", "3", "bags", "this bag is real leather", "small", "long", "single",
    ])


def lpr750k_line(index):
    clip = clip_id(index)
    frames = [f"training_video_00/{clip}/{clip}-{i:04d}.jpg" for i in range(10)]
    image_id = f"a1b2c3d4-0000-4000-8000-{index:012d}"
    return "\t".join([
        clip, str(frames), "unused", image_id, f"training_image/{image_id}.jpg",
        "red leather bag", "7", "bags", "spu9", "this bag is real leather",
    ])


def plain_check(raw, number):
    columns = raw.rstrip(b"\r\n").split(b"\t")
    if len(columns) < 10:
        raise DataError(f"line {number}: found {len(columns)} columns")
    return True


def best_rate(load, lines, repeats, timings):
    """Appends one timing of ``load()`` to ``timings``; returns lines/s of the best so far."""
    start = time.perf_counter()
    loaded = load()
    timings.append(time.perf_counter() - start)
    if len(loaded) != lines:
        raise SystemExit(f"loaded {len(loaded)} of {lines} lines")
    return lines / min(timings)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for layout, make_line in (("LPR4M", lpr4m_line), ("LPR750K", lpr750k_line)):
            path = os.path.join(folder, f"{layout}.txt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(make_line(i) + "\n" for i in range(args.lines))
            loads = {
                "plain": lambda p=path: LineIndex(p, plain_check),
                "validated": lambda p=path: LPRPairAnnotations(p),
            }
            if layout == "LPR4M":
                loads["validated + boxes"] = lambda p=path: LPRPairAnnotations(p, read_boxes=True)
            timings = {name: [] for name in loads}
            rates = {}
            for _ in range(args.repeats):
                for name, load in loads.items():
                    rates[name] = best_rate(load, args.lines, args.repeats, timings[name])
            size = os.path.getsize(path) / 2**20
            print(f"{layout}: {args.lines} lines, {size:.0f} MiB, best of {args.repeats}")
            for name, rate in rates.items():
                print(
                    f"  {name:18s} {rate:10.0f} lines/s  ratio to plain {rate / rates['plain']:.2f}"
                    f"  ({FULL_RELEASE_LINES / rate:.0f} s for {FULL_RELEASE_LINES} lines)"
                )


if __name__ == "__main__":
    main()
