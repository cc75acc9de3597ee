"""Sends numbered batches of log records to the ingest nodes of a Vigil cluster with the
official OpenTelemetry Python SDK (its OTLP/HTTP exporter, one request per batch carrying an
`x-vigil-batch-id`), retrying a batch the cluster did not acknowledge (same id) on the next
endpoint until it is acknowledged. Prints `acked N` as each batch is acknowledged, so the
test can break things mid-stream, and a JSON summary last.

Usage: cluster_sender.py --endpoints URL[,URL...] --run ID --batches N --records M --services K [--pace-ms MS]
"""

import argparse
import json
import sys
import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource


class Collect(LogRecordExporter):
    """Keeps the SDK's records, so one batch goes out as one request."""

    def __init__(self):
        self.records = []

    def export(self, batch):
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis=30000):
        return True

    def shutdown(self):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--deadline-secs", type=float, default=240)
    # Spreads the batches over time, so the test's kills land mid-stream.
    parser.add_argument("--pace-ms", type=float, default=0)
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    deadline = time.monotonic() + args.deadline_secs

    collectors, loggers = {}, {}
    for s in range(args.services):
        service = f"cluster-svc-{s}"
        provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        collect = Collect()
        provider.add_log_record_processor(SimpleLogRecordProcessor(collect))
        collectors[s], loggers[s] = collect, provider.get_logger("cluster-e2e")

    current, attempts, acked = 0, 0, []
    base = time.time_ns() - 60_000_000_000
    for b in range(args.batches):
        s = b % args.services
        collect = collectors[s]
        collect.records = []
        for r in range(args.records):
            loggers[s].emit(
                LogRecord(
                    timestamp=base + b * 1000 + r,
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    body=f"cluster record {r} of batch {b}",
                    attributes={"run": args.run, "batch": b, "record": r},
                )
            )
        records = list(collect.records)
        while True:
            attempts += 1
            exporter = OTLPLogExporter(
                endpoint=f"{endpoints[current]}/v1/logs",
                headers={"x-vigil-batch-id": f"{args.run}-{b}"},
                timeout=5,
            )
            result = exporter.export(records)
            exporter.shutdown()
            if result == LogRecordExportResult.SUCCESS:
                break
            if time.monotonic() > deadline:
                print(json.dumps({"acked": acked, "attempts": attempts, "gave_up": b}), flush=True)
                sys.exit(1)
            current = (current + 1) % len(endpoints)
        acked.append(b)
        print(f"acked {b}", flush=True)
        time.sleep(args.pace_ms / 1000)
    print(json.dumps({"acked": acked, "attempts": attempts}), flush=True)


if __name__ == "__main__":
    main()
