"""The HTTP service (``hopstack serve``) and its page comparing pipeline variants."""

from hopstack.serve.app import ServiceAccess, ServiceLimits, create_app
from hopstack.serve.service import Query, ServedPipeline

__all__ = ["Query", "ServedPipeline", "ServiceAccess", "ServiceLimits", "create_app"]
