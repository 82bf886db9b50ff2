"""``hopstack serve --ray``: every pipeline a Ray Serve deployment whose replicas batch the requests.

The HTTP front stays the ``hopstack serve`` process (:func:`~hopstack.serve.app.create_app` under uvicorn),
so routes, JSON, page and metrics are the in-process service's; :class:`RayServeDispatch` takes the place of
its micro-batchers and forwards each request at once to its pipeline's deployment. A
:class:`PipelineReplica` loads the pipeline file again (every node must see the files, indexes and models at
the driver's paths; it starts in the driver's working directory), warms it up once, and groups requests
with ``@serve.batch`` (``--max-batch``, ``--max-wait-ms``) into calls of the same
:meth:`ServedPipeline.answer <hopstack.serve.service.ServedPipeline.answer>` and ``retrieve`` the in-process
service makes. Ray Serve replaces a replica whose process dies; the requests it held get a 503 that says so.
"""

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hopstack.core.ray_cluster import RaySettings, connect, worker_environment
from hopstack.errors import HopstackInputError
from hopstack.serve.app import BatchReport, ServiceLimits
from hopstack.serve.batching import BatchedResult, ServiceUnavailable, run_isolated
from hopstack.serve.service import Query, ServedPipeline


@dataclass
class ReplicaResult(BatchedResult):
    """One request's outcome on a replica: its :class:`BatchedResult` (``value`` None when it failed), the
    pipeline's ``error`` for it, and ``batch_s``, the runner call's seconds, on the first request of each
    batch only (so that the front counts every batch once in its metrics)."""

    error: BaseException | None = None
    batch_s: float | None = None


class PipelineReplica:
    """A Ray Serve replica of one pipeline: its :class:`ServedPipeline`, warmed up once, and a ``@serve.batch``
    queue for each of answer and retrieve, whose batches run one at a time in a worker thread."""

    def __init__(
        self,
        name: str,
        file: str,
        overrides: dict[str, Any] | None,
        batch_size: int | None,
        cwd: str,
        max_batch: int,
        max_wait_ms: float,
    ):
        from ray import serve

        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative index and model paths mean what they mean to the driver
        self.served = ServedPipeline(name, file, overrides, batch_size)
        self.served.warm_up()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hopstack-worker")
        batch = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1000)
        self._queues = {
            "answer": batch(self._batches(self.served.answer)),
            "retrieve": batch(self._batches(self.served.retrieve)),
        }

    def _batches(self, process: Callable[[list[Query]], list[dict[str, Any]]]) -> Callable:
        """The batch function over ``process``: (query, arrival time) pairs in, one result each out."""

        async def run_batch(requests: list[tuple[Query, float]]) -> list[ReplicaResult]:
            started = time.perf_counter()
            queries = [query for query, _ in requests]
            outcomes = await asyncio.get_running_loop().run_in_executor(self._worker, run_isolated, process, queries)
            seconds = time.perf_counter() - started
            return [
                ReplicaResult(value, len(requests), started - arrived, error, seconds if i == 0 else None)
                for i, ((_, arrived), (value, error)) in enumerate(zip(requests, outcomes))
            ]

        return run_batch

    async def __call__(self, endpoint: str, query: Query) -> ReplicaResult:
        """Run ``query`` on ``endpoint`` (answer, retrieve) in the next batch."""
        return await self._queues[endpoint]((query, time.perf_counter()))


def _check_room(resources: dict[str, float], pipelines: int, replicas: int, settings: RaySettings) -> None:
    """Refuse replicas the whole cluster could never place (Ray Serve would wait for them forever, and the
    service would stay warming): every pipeline's replicas reserve their CPUs and GPUs at once."""
    for name, each in (("CPU", settings.cpus_per_actor), ("GPU", settings.gpus_per_actor)):
        needed, present = pipelines * replicas * each, resources.get(name, 0.0)
        if needed > present + 1e-9:
            raise HopstackInputError(
                f"{pipelines} pipeline(s) x {replicas} replica(s) x {each:g} {name} need {needed:g} {name}s; the Ray "
                f"cluster at {settings.address} has {present:g}: lower --replicas or --ray-{name.lower()}s-per-actor"
            )


class RayServeDispatch:
    """The :class:`~hopstack.serve.app.Dispatch` of ``hopstack serve --ray``: one Ray Serve application a
    pipeline, of ``replicas`` :class:`PipelineReplica` that reserve what ``settings`` says an actor reserves.

    Joins the cluster when built, so that an unreachable address, or a cluster too small for the replicas,
    fails before the service listens. The
    applications are named ``hopstack-<random id>-<pipeline>`` (several fronts may share a cluster) and are
    deleted when the service stops."""

    def __init__(
        self, pipelines: Sequence[ServedPipeline], limits: ServiceLimits, replicas: int, settings: RaySettings
    ):
        ray = connect(settings.address)
        _check_room(ray.cluster_resources(), len(pipelines), replicas, settings)
        self.pipelines = {p.name: p for p in pipelines}
        self.limits = limits
        self.replicas = replicas
        self.settings = settings
        self.prefix = f"hopstack-{uuid.uuid4().hex[:8]}"
        self.handles: dict[str, Any] = {}
        self.deployed: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.on_batch: BatchReport | None = None

    def start(self, on_batch: BatchReport) -> None:
        """Keep ``on_batch``; the deployments start in :meth:`warm_up`."""
        self.on_batch = on_batch

    async def warm_up(self, name: str) -> None:
        """Deploy the pipeline; returns once every replica has warmed up."""
        self.handles[name] = await asyncio.get_running_loop().run_in_executor(None, self._deploy, name)

    def _deploy(self, name: str) -> Any:
        from ray import serve

        serve.start(proxy_location="Disabled")  # the front is this process: Ray Serve needs no HTTP proxy
        served = self.pipelines[name]
        deployment = serve.deployment(
            PipelineReplica,
            name=name,
            num_replicas=self.replicas,
            max_ongoing_requests=2 * self.limits.max_batch,  # the next batch fills while one runs
            ray_actor_options={**self.settings.actor_options(), "runtime_env": {"env_vars": worker_environment()}},
        )
        application = deployment.bind(
            name,
            str(served.file),
            served.overrides,
            served.batch_size,
            os.getcwd(),
            self.limits.max_batch,
            self.limits.max_wait_ms,
        )
        self.deployed.append(f"{self.prefix}-{name}")
        return serve.run(application, name=self.deployed[-1], route_prefix=None)

    async def submit(self, endpoint: str, name: str, query: Query, timeout_s: float) -> BatchedResult:
        """Send ``query`` to a replica now; a replica that died under it is a :class:`ServiceUnavailable`."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        response = self.handles[name].remote(endpoint, query)
        self.in_flight[name] += 1
        try:
            result: ReplicaResult = await asyncio.wait_for(response, timeout_s)
        except TimeoutError:
            response.cancel()
            raise
        except (RayActorError, DeploymentUnavailableError, BackPressureError) as exc:
            raise ServiceUnavailable(
                f"the Ray Serve replica of pipeline '{name}' died or is unavailable ({type(exc).__name__}); "
                "Ray Serve starts a new one: retry"
            ) from exc
        finally:
            self.in_flight[name] -= 1
        if result.batch_s is not None and self.on_batch is not None:
            self.on_batch(name, result.batch_size, result.batch_s)
        if result.error is not None:
            raise result.error
        return result

    def queued(self, name: str) -> int:
        """Requests sent to the pipeline's replicas and not answered yet."""
        return self.in_flight[name]

    async def stop(self) -> None:
        """Delete the applications this service deployed (their replicas stop)."""
        await asyncio.get_running_loop().run_in_executor(None, self._delete)

    def _delete(self) -> None:
        from ray import serve

        for application in self.deployed:
            serve.delete(application)
