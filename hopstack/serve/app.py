"""The FastAPI app of ``hopstack serve``: answering and retrieval over pipelines loaded at start-up.

Endpoints: ``POST /v1/answer``, ``POST /v1/retrieve``, ``GET /v1/pipelines`` (names, descriptions, graphs
as Mermaid), ``GET /v1/pipelines/{name}/graph.svg``, ``GET /healthz`` (the process answers), ``GET
/readyz`` (every pipeline warmed up), ``GET /metrics`` (Prometheus), ``GET /`` (the page comparing
variants), and FastAPI's ``/docs`` and ``/openapi.json``.

Where the batches run is a :class:`Dispatch`. By default (:class:`InProcess`) every pipeline gets two
:class:`~hopstack.serve.batching.MicroBatcher` (answer, retrieve); all of them run their batches in one
worker thread, one batch at a time, since pipelines share models that are not thread-safe. ``hopstack serve
--ray`` passes :class:`~hopstack.serve.ray_serve.RayServeDispatch` instead: each request goes to a Ray
Serve deployment, whose replicas batch them. Bad input is a 4xx with a message that names the field; a 5xx
means the service or a pipeline failed (500), a request timed out (504) or the service is not ready, is
shutting down or lost the replica running the request (503).
"""

import asyncio
import gc
import hmac
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from hopstack.errors import HopstackInputError
from hopstack.serve.batching import BatchedResult, MicroBatcher, ServiceUnavailable
from hopstack.serve.limits import HeaderLimits
from hopstack.serve.metrics import ServiceMetrics
from hopstack.serve.service import RETURNABLE, Query, ServedPipeline

PAGE = Path(__file__).parent / "page"
ENDPOINTS = ("answer", "retrieve")
log = logging.getLogger("hopstack.serve")


@dataclass(frozen=True)
class ServiceAccess:
    """Who may reach the service, for users who expose it beyond localhost.

    :param allowed_hosts: Host header values accepted (others get a 400); empty: any.
    :param api_key: when set, ``/v1`` requests need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
        (others get a 401).
    :param cors_origins: browser origins allowed to call the API from their pages.
    """

    allowed_hosts: tuple[str, ...] = ()
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/])/(?:[^/\s'\"]+/)+([^/\s'\"]+)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last part: error bodies do not show the server's files."""
    return _ABSOLUTE_PATH.sub(r"…/\1", message)


@dataclass(frozen=True)
class ServiceLimits:
    """What the service accepts and how it batches.

    :param max_batch: the most questions one runner call receives (1 turns micro-batching off).
    :param max_wait_ms: how long the first request of a batch waits for others.
    :param timeout_s: a request waiting longer (queue + run) gets a 504.
    :param max_question_chars: longer questions get a 422.
    :param max_top_k: the largest ``top_k`` a client may ask for.
    :param max_body_bytes: larger request bodies get FastAPI's 413 ("Content Too Large", before parsing).
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    timeout_s: float = 120.0
    max_question_chars: int = 2000
    max_top_k: int = 100
    max_body_bytes: int = 65536


def request_models(limits: ServiceLimits, names: Sequence[str]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request bodies of ``/v1/answer`` and ``/v1/retrieve`` under ``limits``: unknown fields are
    refused, so a client can send neither a pipeline definition nor a path."""
    served = ", ".join(names)
    question_type = Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.max_question_chars)
    ]

    class RetrieveRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: question_type = Field(description="the question, at most max_question_chars characters")
        pipeline: str | None = Field(None, description=f"one of the served pipelines ({served}); default: the first")
        top_k: int | None = Field(None, ge=1, le=limits.max_top_k, description="documents to return")

    class AnswerRequest(RetrieveRequest):
        returns: list[Literal[RETURNABLE]] = Field(  # type: ignore[valid-type]
            ["documents", "answer"], alias="return", description="parts of the response to include"
        )

    return AnswerRequest, RetrieveRequest


BatchReport = Callable[[str, int, float], None]
"""Told (pipeline, batch size, seconds) after every runner call, for the metrics."""


class Dispatch(Protocol):
    """Where a service's batches run: :class:`InProcess`, or Ray Serve replicas
    (:class:`~hopstack.serve.ray_serve.RayServeDispatch`)."""

    def start(self, on_batch: BatchReport) -> None:
        """Get ready to take requests (on the running event loop)."""

    async def warm_up(self, name: str) -> None:
        """Load pipeline ``name``'s models; returns once it can answer."""

    async def submit(self, endpoint: str, name: str, query: Query, timeout_s: float) -> BatchedResult:
        """Run ``query`` on pipeline ``name``'s ``endpoint`` (answer, retrieve) in some batch; raises
        :class:`TimeoutError` after ``timeout_s``, :class:`ServiceUnavailable` when it cannot run it now,
        or the pipeline's error for this query."""

    def queued(self, name: str) -> int:
        """Requests for pipeline ``name`` waiting for their batch."""

    async def stop(self) -> None:
        """Finish what was taken and release what :meth:`start` and :meth:`warm_up` got."""


class InProcess:
    """Batches run in this process: two :class:`MicroBatcher` a pipeline, all in one worker thread."""

    def __init__(self, pipelines: dict[str, ServedPipeline], limits: ServiceLimits):
        self.pipelines = pipelines
        self.limits = limits
        self.batchers: dict[tuple[str, str], MicroBatcher] = {}
        self.executor: ThreadPoolExecutor | None = None

    def start(self, on_batch: BatchReport) -> None:
        """Start the worker thread and the batchers."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hopstack-worker")
        for name, served in self.pipelines.items():
            for endpoint, process in (("answer", served.answer), ("retrieve", served.retrieve)):
                batcher = MicroBatcher(
                    process,
                    self.executor,
                    max_batch=self.limits.max_batch,
                    max_wait_ms=self.limits.max_wait_ms,
                    on_batch=lambda size, seconds, name=name: on_batch(name, size, seconds),
                )
                batcher.start()
                self.batchers[(endpoint, name)] = batcher

    async def warm_up(self, name: str) -> None:
        """Warm the pipeline up in the worker thread."""
        await asyncio.get_running_loop().run_in_executor(self.executor, self.pipelines[name].warm_up)

    async def submit(self, endpoint: str, name: str, query: Query, timeout_s: float) -> BatchedResult:
        """Through the pipeline's batcher for ``endpoint``."""
        return await self.batchers[(endpoint, name)].submit(query, timeout_s)

    def queued(self, name: str) -> int:
        """Requests in the pipeline's two batchers' queues."""
        return sum(self.batchers[(endpoint, name)].queued for endpoint in ENDPOINTS)

    async def stop(self) -> None:
        """Run every queued batch, then stop the worker thread."""
        await asyncio.gather(*(b.close() for b in self.batchers.values()))
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class _State:
    """What the app holds between requests."""

    def __init__(self, pipelines: dict[str, ServedPipeline], dispatch: Dispatch, freeze_heap: bool):
        self.pipelines = pipelines
        self.dispatch = dispatch
        self.freeze_heap = freeze_heap
        self.metrics = ServiceMetrics()
        self.ready = False
        self.warm_up_error: str | None = None
        self.warming: str | None = None

    def start(self) -> None:
        self.dispatch.start(self.metrics.observe_batch)

    async def warm_up(self) -> None:
        started = time.perf_counter()
        try:
            for name in self.pipelines:
                self.warming = name
                await self.dispatch.warm_up(name)
        except Exception as exc:  # reported by /readyz; the process keeps answering /healthz
            self.warm_up_error = f"pipeline '{self.warming}' failed to warm up: {exc}"
            log.error(self.warm_up_error)
            return
        self.warming = None
        if self.freeze_heap:
            gc.freeze()
        self.ready = True
        self.metrics.ready.set(1)
        seconds = time.perf_counter() - started
        print(f"ready: {', '.join(self.pipelines)} warmed up in {seconds:.1f} s", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        await self.dispatch.stop()


def create_app(
    pipelines: Sequence[ServedPipeline],
    limits: ServiceLimits | None = None,
    freeze_heap: bool = False,
    access: ServiceAccess | None = None,
    dispatch: Dispatch | None = None,
) -> FastAPI:
    """The service over ``pipelines`` (the first is the default). Models warm up in the background after
    start-up; ``/readyz`` says when they are ready, and ``/v1`` requests get a 503 until then.

    ``freeze_heap`` (for a process that only serves, as ``hopstack serve``): after warm-up, ``gc.freeze()``
    moves the models and indexes out of the garbage collector's reach, so that collections triggered by
    the requests' garbage no longer scan them (about 20% of a BM25 batch's time without it). Cyclic
    garbage among what existed at that moment is then never freed, so a process that builds apps
    repeatedly (tests) leaves it off.

    ``dispatch`` runs the batches (default: :class:`InProcess`, over ``pipelines``); the app still answers
    ``/v1/pipelines`` and draws the graphs from ``pipelines``, which need not be warmed up for that."""
    limits = limits or ServiceLimits()
    access = access or ServiceAccess()
    if not pipelines:
        raise HopstackInputError("serve needs at least one pipeline file")
    by_name = {p.name: p for p in pipelines}
    if len(by_name) != len(pipelines):
        names = [p.name for p in pipelines]
        raise HopstackInputError(
            f"two pipelines have the same name: {sorted({n for n in names if names.count(n) > 1})}"
        )
    state = _State(by_name, dispatch or InProcess(by_name, limits), freeze_heap)
    default = pipelines[0].name
    AnswerRequest, RetrieveRequest = request_models(limits, list(by_name))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        warming = asyncio.create_task(state.warm_up())
        yield
        await warming
        await state.stop()

    app = FastAPI(
        title="hopstack",
        summary="Multi-hop question answering with retrieval: YAML pipelines served with dynamic micro-batching.",
        lifespan=lifespan,
        max_body_size=limits.max_body_bytes,
    )
    app.state.hopstack = state
    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    if access.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(access.allowed_hosts))
    if access.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(access.cors_origins), allow_methods=["GET", "POST"])

    def count_failure(endpoint: str, pipeline: str, status: int, kind: str) -> None:
        state.metrics.requests.labels(endpoint, pipeline, str(status)).inc()
        state.metrics.errors.labels(endpoint, kind).inc()

    def failure(endpoint: str, pipeline: str, status: int, kind: str, message: str) -> JSONResponse:
        count_failure(endpoint, pipeline, status, kind)
        headers = {"Retry-After": "5"} if status == 503 else None
        detail = without_paths(message) if status >= 500 else message
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    def route_label(request: Request) -> str:
        """The route's template (never the raw path: a client's random paths must not become labels)."""
        route = request.scope.get("route")
        return getattr(route, "path", None) or "unmatched"

    async def require_key(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/v1/") and request.method != "OPTIONS":
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), access.api_key.encode()):
                return failure("/v1", "", 401, "unauthorized", "an API key is needed (Authorization: Bearer KEY)")
        return await call_next(request)

    if access.api_key:  # a request-wrapping middleware costs every request: only when a key is asked for
        app.middleware("http")(require_key)
    app.add_middleware(HeaderLimits)  # added last, so outermost: over-limit headers reach nothing else

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing and protocol errors (unknown path 404, wrong method 405, body over the limit 413)."""
        count_failure(route_label(request), "", exc.status_code, "validation" if exc.status_code < 500 else "service")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"body is not valid JSON (at character {e['loc'][-1]})"
            if e["type"] == "json_invalid"
            else f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        ]
        count_failure(route_label(request), "", 422, "validation")
        return JSONResponse({"detail": "; ".join(problems), "errors": jsonable_errors(exc)}, status_code=422)

    async def serve(endpoint: str, body: Any, query: Query) -> Response:
        path = f"/v1/{endpoint}"
        name = default if body.pipeline is None else body.pipeline
        if name not in by_name:
            return failure(path, "", 404, "not_found", f"unknown pipeline '{name}'; served: {', '.join(by_name)}")
        if state.warm_up_error:
            return failure(path, name, 503, "unavailable", state.warm_up_error)
        if not state.ready:
            return failure(path, name, 503, "unavailable", f"warming up (pipeline '{state.warming}'); see /readyz")
        started = time.perf_counter()
        try:
            done = await state.dispatch.submit(endpoint, name, query, limits.timeout_s)
        except TimeoutError:
            return failure(path, name, 504, "timeout", f"no result within {limits.timeout_s:g} s")
        except ServiceUnavailable as exc:
            return failure(path, name, 503, "unavailable", str(exc))
        except HopstackInputError as exc:
            return failure(path, name, 400, "validation", str(exc))
        except Exception as exc:
            log.exception("pipeline %s failed", name)
            return failure(path, name, 500, "pipeline", f"pipeline '{name}' failed: {type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        result = done.value
        result["timings"].update(queue_ms=done.queued_s * 1000, total_ms=seconds * 1000)
        state.metrics.requests.labels(path, name, "200").inc()
        state.metrics.latency.labels(path, name).observe(seconds)
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @app.post("/v1/answer", summary="Answer a question with one pipeline")
    async def answer(body: AnswerRequest) -> Response:  # type: ignore[valid-type]
        return await serve("answer", body, Query(body.question, body.top_k, frozenset(body.returns)))

    @app.post("/v1/retrieve", summary="Retrieve documents for a question (a reader pipeline stops before its reader)")
    async def retrieve(body: RetrieveRequest) -> Response:  # type: ignore[valid-type]
        return await serve("retrieve", body, Query(body.question, body.top_k, frozenset({"documents"})))

    @app.get("/v1/pipelines", summary="The served pipelines and their graphs (Mermaid)")
    async def list_pipelines() -> dict[str, Any]:
        return {"default": default, "pipelines": [p.describe() for p in pipelines]}

    @app.get("/v1/pipelines/{name}/graph.svg", summary="A pipeline's graph as SVG")
    async def graph(name: str) -> Response:
        if name not in by_name:
            return failure("/v1/pipelines/graph.svg", "", 404, "not_found", f"unknown pipeline '{name}'")
        svg = await asyncio.get_running_loop().run_in_executor(None, by_name[name].svg)
        return Response(svg, media_type="image/svg+xml")

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Every pipeline is warmed up")
    async def readyz() -> JSONResponse:
        body = {"ready": state.ready, "warming": state.warming, "error": state.warm_up_error}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        for name in by_name:
            state.metrics.queued.labels(name).set(state.dispatch.queued(name))
        text = await asyncio.get_running_loop().run_in_executor(None, state.metrics.render)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    return app


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's validation errors without the (possibly huge, possibly unserialisable) input values."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
