#!/usr/bin/env python3
"""Saves the rows behind each fault's investigation, for `vigil-eval investigations DIR`.

Usage: save_investigation_inputs.py FAULTS.json API_URL OUT_DIR [--seconds 180]

For every fault of FAULTS.json (as `rca_incident_score.py` reads it), asks the collector at
API_URL for the investigation of [inject, inject + seconds) — as the scorer does, so the
collector chooses the baseline and lead-in — then reads the same rows the ranking read, over
`POST /api/v1/investigations/read`, and writes them with the true service to OUT_DIR/NN.json.
`vigil-eval investigations OUT_DIR` then ranks them again in seconds, without a replay: a
change to the ranking (`rca/src/investigate/`) is measured on the same rows. A change to what
is read (the collector's side) needs a new replay.

Typical use: `target/release/vigil-eval nezha --keep DIR`, then a collector started on
DIR/data (see ARCHITECTURE.md, "Investigations"), then this script on
DIR/faults-at-inject-time.json.
"""
import argparse
import json
import os
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("faults")
    ap.add_argument("api")
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=180)
    args = ap.parse_args()

    def post(path, body):
        req = urllib.request.Request(args.api + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.load(r)

    def read(body):
        return post("/api/v1/investigations/read", body)

    os.makedirs(args.out, exist_ok=True)
    for n, fault in enumerate(json.load(open(args.faults))):
        t = int(fault["inject_unix"] * 1000)
        asked = post("/api/v1/investigations", {"start": t, "end": t + int(args.seconds * 1000)})
        window = {"start_ms": t, "end_ms": t + int(args.seconds * 1000)}
        baseline = {"start_ms": asked["baseline"]["start"], "end_ms": asked["baseline"]["end"]}
        lead = asked.get("lead_in")
        lead_in = {"start_ms": lead["start"], "end_ms": lead["end"]} if lead else None
        ranges = [window, baseline] + ([lead_in] if lead_in else [])
        spans, counts, lines = [], [], []
        for r in ranges:
            spans += read({"read": "span_rows", "range": r, "limit": 400_000})[0]
            counts += read({"read": "log_counts", "range": r, "window": window})
            if r is not baseline:
                lines += read({"read": "warning_lines", "range": r, "limit": 100_000})
        metrics = read({"read": "metric_series", "window": window, "baseline": baseline})
        case = {"service": fault["service"], "type": fault["type"], "window": window,
                "baseline": baseline, "lead_in": lead_in, "spans": spans, "log_counts": counts,
                "window_lines": lines, "metrics": metrics}
        with open(os.path.join(args.out, f"{n:02}.json"), "w") as f:
            json.dump(case, f)
        ranked = [c["service"] for c in asked["candidates"][:3]]
        print(n, fault["service"], fault["type"], "->", ", ".join(ranked), flush=True)


if __name__ == "__main__":
    main()
