"""Sends logs, spans and metrics to a Vigil collector with the official OpenTelemetry
Python SDK, then prints (as JSON on stdout) exactly what it sent, so the Rust test can
compare it with what the query API returns.

Usage: send_otlp.py --protocol grpc|http --endpoint URL --service NAME
"""

import argparse
import json
import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPLogExporter(endpoint=endpoint, insecure=True),
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            OTLPMetricExporter(endpoint=endpoint, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    args = parser.parse_args()

    resource = Resource.create({"service.name": args.service, "host.name": "py-host"})
    log_exporter, span_exporter, metric_exporter = exporters(args.protocol, args.endpoint)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("py-e2e")
    start = time.time_ns() - 30_000_000_000
    end = start + 120_000_000
    span = tracer.start_span(
        "GET /inventory",
        kind=SpanKind.SERVER,
        start_time=start,
        attributes={"http.route": "/inventory", "retries": 3},
    )
    span.set_status(Status(StatusCode.ERROR, "db timeout"))
    ctx = span.get_span_context()
    span.end(end_time=end)
    tracer_provider.shutdown()

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = logger_provider.get_logger("py-e2e")
    logs = []
    for i in range(3):
        ts = time.time_ns() - 20_000_000_000 + i
        body = f"inventory lookup {i} failed: connection reset"
        logger.emit(
            LogRecord(
                timestamp=ts,
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                severity_text="ERROR",
                severity_number=SeverityNumber.ERROR,
                body=body,
                attributes={"i": i, "db.system": "postgresql"},
            )
        )
        logs.append({"timestamp": str(ts), "body": body, "i": i})
    logger_provider.shutdown()

    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("py-e2e")
    counter = meter.create_counter("py.orders")
    counter.add(5, {"region": "eu"})
    counter.add(6, {"region": "eu"})
    meter_provider.force_flush()
    meter_provider.shutdown()

    print(
        json.dumps(
            {
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "span_start": str(start),
                "span_end": str(end),
                "logs": logs,
                "counter": 11,
            }
        )
    )


if __name__ == "__main__":
    main()
