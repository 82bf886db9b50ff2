"""The batched graph runner, node fingerprints and (with the evaluation issue) caching and tracing."""

from hopstack.graphs.fingerprint import input_digest, pipeline_fingerprints
from hopstack.graphs.runner import BatchRunner, NodeStats, RunResult

__all__ = ["BatchRunner", "NodeStats", "RunResult", "input_digest", "pipeline_fingerprints"]
