#!/usr/bin/env python3
"""Leave-one-category-out cross-validation of the NAB detector's constants (issue 17).

For each NAB category C: every configuration of a small grid is scored on the *other*
categories, the best one is chosen, and C's results are taken from it. The results of all
categories, each from the configuration chosen without it, are then scored together with
the standard NAB scorer: that is the cross-validated figure. It is printed beside the
in-sample figure of the defaults (what `vigil-eval nab` gives) and of the grid's best
configuration on everything (what tuning on the data scored would report).

Usage (from the repository root, after `cargo build --release -p vigil-eval`):
    python3 eval/nab_cv.py --data ../shared/data/nab --tools ../shared/tools
Only the Python standard library is needed.
"""
import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile

# The constants cross-validated, each with the values tried (the default among them).
GRID = {
    "cusum_threshold": [8, 12, 16],
    "breakout_min_z": [3.0, 3.75, 4.5],
    "cooldown": [50, 100, 200],
}
DEFAULTS = {"cusum_threshold": 12, "breakout_min_z": 3.75, "cooldown": 100}


def detect(binary, data, out, config):
    args = [binary, "nab", "--data", os.path.join(data, "data"), "--out", out]
    for k, v in config.items():
        args += ["--set", f"{k}={v}"]
    subprocess.run(args, check=True, capture_output=True)


def score(tools, data, results, categories):
    """NAB standard score of the given categories of a results folder."""
    with tempfile.TemporaryDirectory() as subset:
        for c in categories:
            os.symlink(os.path.join(results, c), os.path.join(subset, c))
        out = subprocess.run(
            [sys.executable, os.path.join(tools, "nab_score.py"), "--data", os.path.join(data, "data"),
             "--windows", os.path.join(data, "combined_windows.json"),
             "--profiles", os.path.join(data, "profiles.json"), subset],
            check=True, capture_output=True, text=True).stdout
    m = re.search(r"NAB standard: ([-0-9.]+)", out)
    if not m:
        raise SystemExit(f"no score in: {out}")
    return float(m.group(1))


def describe(config):
    return " ".join(f"{k}={v}" for k, v in config.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the NAB folder (data/, combined_windows.json, profiles.json)")
    ap.add_argument("--tools", required=True, help="where nab_score.py is")
    ap.add_argument("--binary", default="target/release/vigil-eval")
    args = ap.parse_args()
    categories = sorted(d for d in os.listdir(os.path.join(args.data, "data"))
                        if os.path.isdir(os.path.join(args.data, "data", d)))
    configs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    with tempfile.TemporaryDirectory() as work:
        runs = []
        for i, config in enumerate(configs):
            out = os.path.join(work, f"run{i}")
            detect(args.binary, args.data, out, config)
            runs.append(out)
        # Score of every configuration without each category (and on everything).
        without = {c: [score(args.tools, args.data, r, [x for x in categories if x != c]) for r in runs]
                   for c in categories}
        everything = [score(args.tools, args.data, r, categories) for r in runs]
        assembled = os.path.join(work, "cv")
        os.makedirs(assembled)
        for c in categories:
            best = max(range(len(configs)), key=lambda i: without[c][i])
            print(f"{c:<24} chosen on the other categories: {describe(configs[best])}")
            os.symlink(os.path.join(runs[best], c), os.path.join(assembled, c))
        cv = score(args.tools, args.data, assembled, categories)
        default = everything[configs.index(DEFAULTS)]
        best_all = max(range(len(configs)), key=lambda i: everything[i])
        print(f"NAB standard, cross-validated (each category scored with constants chosen without it): {cv:.2f}")
        print(f"NAB standard, in-sample, the defaults ({describe(DEFAULTS)}): {default:.2f}")
        print(f"NAB standard, in-sample, the grid's best on everything ({describe(configs[best_all])}): "
              f"{everything[best_all]:.2f}")


if __name__ == "__main__":
    main()
