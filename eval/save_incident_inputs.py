#!/usr/bin/env python3
"""Saves the rows behind the investigation of each fault's *incident*, for `vigil-eval investigations DIR`.

Usage: save_incident_inputs.py FAULTS.json API_URL OUT_DIR

The online figure of `vigil-eval nezha` ranks each fault by the incident the scorer matches to
it (`../shared/tools/rca_incident_score.py`: the first incident opening from a minute before the
fault to six minutes after, else one open at the fault), and that incident is ranked by the
investigation of its own window (a minute before its first symptom to three after). For every
fault this finds that incident, reads its kept investigation's window and baseline, and writes
the same rows the ranking read, as `save_investigation_inputs.py` does for the fault-time
windows. `vigil-eval investigations OUT_DIR` then ranks the incidents again in seconds, so a
change to the ranking (`rca/src/investigate/`) is measured on the online figure's windows
without a replay. Faults with no matched incident are left out (the figure divides by all 28).

Typical use: `target/release/vigil-eval nezha --grid-phase 30 --keep DIR`, then a collector
started on DIR/data (see README.md), then this script on DIR/faults-at-inject-time.json.
"""
import json
import os
import sys
import urllib.request


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    faults_path, api, out = sys.argv[1:]

    def get(path):
        with urllib.request.urlopen(api + path, timeout=600) as r:
            return json.load(r)

    def read(body):
        req = urllib.request.Request(api + "/api/v1/investigations/read", data=json.dumps(body).encode(),
                                     method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.load(r)

    incidents = get("/api/v1/incidents?start=0&limit=10000")["incidents"]
    investigations = get("/api/v1/investigations?limit=500")["investigations"]

    def matched(fault):
        # The scorer's rule (rca_incident_score.py, `match`).
        t = fault["inject_unix"] * 1000
        after = [i for i in incidents if t - 60_000 <= i["start_ms"] <= t + 360_000]
        if after:
            return min(after, key=lambda i: i["start_ms"])
        during = [i for i in incidents if i["start_ms"] < t <= i["end_ms"] + 60_000]
        return max(during, key=lambda i: i["start_ms"]) if during else None

    os.makedirs(out, exist_ok=True)
    for n, fault in enumerate(json.load(open(faults_path))):
        incident = matched(fault)
        kept = [v for v in investigations if incident and v.get("incident") == incident["id"]]
        if not kept:
            print(n, fault["service"], "no incident, or not investigated", flush=True)
            continue
        inv = kept[0]
        window = {"start_ms": inv["window"]["start"], "end_ms": inv["window"]["end"]}
        baseline = {"start_ms": inv["baseline"]["start"], "end_ms": inv["baseline"]["end"]}
        spans, counts, lines = [], [], []
        for r in (window, baseline):
            spans += read({"read": "span_rows", "range": r, "limit": 400_000})[0]
            counts += read({"read": "log_counts", "range": r, "window": window})
            if r is window:
                lines += read({"read": "warning_lines", "range": r, "limit": 100_000})
        metrics = read({"read": "metric_series", "window": window, "baseline": baseline})
        case = {"service": fault["service"], "type": fault["type"], "window": window, "baseline": baseline,
                "lead_in": None, "spans": spans, "log_counts": counts, "window_lines": lines,
                "metrics": metrics}
        with open(os.path.join(out, f"{n:02}.json"), "w") as f:
            json.dump(case, f)
        ranked = [c["service"] for c in incident["candidates"][:3]]
        print(n, fault["service"], fault["type"], "->", ", ".join(ranked), flush=True)


if __name__ == "__main__":
    main()
