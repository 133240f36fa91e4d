"""Prometheus metrics for one served template, on a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the scrape for a one-process service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hub_requests", "HTTP requests served", ["route", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "hub_request_errors", "HTTP requests answered with a 4xx or 5xx status", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hub_request_latency_seconds", "Time from request to response", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "hub_batch_size", "Inputs per predict() call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.predict_latency = Histogram(
            "hub_predict_latency_seconds", "Duration of one predict() call", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ready = Gauge("hub_ready", "1 once setup() has finished", registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.predict_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
