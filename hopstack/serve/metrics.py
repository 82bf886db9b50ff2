"""The service's Prometheus metrics (``GET /metrics``), in a registry of its own per app."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests by endpoint, pipeline and status; request and batch latency; batch sizes; errors by kind;
    queue depth; readiness."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "hopstack_requests", "HTTP requests served", ["endpoint", "pipeline", "status"], registry=registry
        )
        self.latency = Histogram(
            "hopstack_request_seconds",
            "Request latency (queue wait + batch run)",
            ["endpoint", "pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "hopstack_batch_size",
            "Questions per runner call",
            ["pipeline"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "hopstack_batch_seconds", "Runner call time", ["pipeline"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.errors = Counter(
            "hopstack_errors",
            "Requests that failed, by kind (validation, not_found, timeout, unavailable, pipeline)",
            ["endpoint", "kind"],
            registry=registry,
        )
        self.queued = Gauge("hopstack_queued_requests", "Requests waiting for a batch", ["pipeline"], registry=registry)
        self.ready = Gauge("hopstack_ready", "1 once every pipeline is warmed up", registry=registry)

    def observe_batch(self, pipeline: str, size: int, seconds: float) -> None:
        """Record one runner call."""
        self.batch_size.labels(pipeline).observe(size)
        self.batch_seconds.labels(pipeline).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
