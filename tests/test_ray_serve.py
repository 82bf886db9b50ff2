"""``hopstack serve --ray``: a real ``hopstack serve`` process whose pipeline runs as two Ray Serve replicas on a
two-node Ray cluster on 127.0.0.1 answers as the in-process service does, keeps its routes, page and metrics,
and survives a replica killed while requests are in flight."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import REPO, YAML_DIR
from hopstack.serve import Query, ServedPipeline
from hopstack.testing import LocalRayCluster, free_port, stop_process, wait_ready

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each; a replica reserves 0.75 CPU, so the two replicas land one on each node."""
    pytest.importorskip("ray")
    with LocalRayCluster(nodes=2, cpus_per_node=1) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster, sample_corpus, tmp_path_factory):
    """``hopstack serve yaml/bm25.yaml --ray ADDRESS --replicas 2``; a batch waits up to 600 ms for company, so
    that a burst of requests is still queued on the replicas when one of them is killed."""
    port = free_port()
    command = [sys.executable, "-m", "hopstack", "serve", str(YAML_DIR / "bm25.yaml"), "--index", str(sample_corpus)]
    command += ["--ray", cluster.address, "--replicas", "2", "--ray-cpus-per-actor", "0.75", "--port", str(port)]
    command += ["--max-batch", "64", "--max-wait-ms", "600", "--timeout", str(TIMEOUT_S)]
    folder = tmp_path_factory.mktemp("serve")
    with open(folder / "serve.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "HOPSTACK_HOME": str(folder)}, stdout=log, stderr=subprocess.STDOUT
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2 * TIMEOUT_S)
    try:
        wait_ready(client, seconds=120)
        yield client
    finally:
        stop_process(process, 60)
        client.close()


def replicas(cluster) -> list:
    """The alive Ray Serve replicas of the cluster (only the server's run there)."""
    from ray.util.state import list_actors

    alive = list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")])
    return [actor for actor in alive if actor.class_name.startswith("ServeReplica:")]


def test_replicas_need_ray(cli):
    code, _, err = cli("serve", str(YAML_DIR / "bm25.yaml"), "--replicas", "2")
    assert code == 2 and "--replicas needs --ray" in err


def test_replicas_the_cluster_could_never_place_are_refused():
    from hopstack.core.ray_cluster import RaySettings
    from hopstack.errors import HopstackInputError
    from hopstack.serve.ray_serve import _check_room

    cluster = {"CPU": 2.0}
    _check_room(cluster, pipelines=2, replicas=2, settings=RaySettings("auto", cpus_per_actor=0.5))
    with pytest.raises(HopstackInputError, match=r"2 pipeline\(s\) x 2 replica\(s\) x 1 CPU need 4 CPUs.*has 2"):
        _check_room(cluster, pipelines=2, replicas=2, settings=RaySettings("auto"))
    with pytest.raises(HopstackInputError, match="--ray-gpus-per-actor"):
        _check_room(cluster, pipelines=1, replicas=1, settings=RaySettings("auto", gpus_per_actor=1))


@pytest.mark.slow
def test_answers_are_the_in_process_services(server, sample_corpus, sample_questions):
    local = ServedPipeline("bm25", YAML_DIR / "bm25.yaml", {"index": str(sample_corpus)})
    local.warm_up()
    questions = [q.question for q in sample_questions[:4]]
    for endpoint, process in (("answer", local.answer), ("retrieve", local.retrieve)):
        expected = process([Query(q, 5, frozenset({"documents"})) for q in questions])
        with ThreadPoolExecutor(max_workers=len(questions)) as pool:  # concurrent: they share batches
            sent = [pool.submit(server.post, f"/v1/{endpoint}", json={"question": q, "top_k": 5}) for q in questions]
            responses = [future.result() for future in sent]
        for response, want in zip(responses, expected):
            assert response.status_code == 200, response.text
            got = response.json()["documents"]
            assert [d["id"] for d in got] == [d["id"] for d in want["documents"]]
            assert [d["score"] for d in got] == pytest.approx([d["score"] for d in want["documents"]])


@pytest.mark.slow
def test_routes_page_and_metrics_are_the_services(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").json()["ready"] is True
    assert [p["name"] for p in server.get("/v1/pipelines").json()["pipelines"]] == ["bm25"]
    assert "<svg" in server.get("/v1/pipelines/bm25/graph.svg").text
    assert "/page/app.js" in server.get("/").text
    assert server.post("/v1/answer", json={"question": ""}).status_code == 422
    body = server.post("/v1/retrieve", json={"question": "Who founded Brannock Looms?"}).json()
    timings = body["timings"]
    assert timings["batch_size"] >= 1 and 0 < timings["batch_ms"] and timings["queue_ms"] <= timings["total_ms"]
    metrics = server.get("/metrics").text
    assert 'hopstack_requests_total{endpoint="/v1/retrieve",pipeline="bm25",status="200"}' in metrics
    assert 'hopstack_batch_size_count{pipeline="bm25"}' in metrics and "hopstack_ready 1.0" in metrics


@pytest.mark.slow
def test_replicas_run_on_both_nodes_and_a_killed_one_is_replaced(server, cluster):
    before = replicas(cluster)
    assert len(before) == 2 and len({actor.node_id for actor in before}) == 2
    victim = before[0].pid

    def ask(i: int) -> httpx.Response:
        return server.post("/v1/retrieve", json={"question": f"Who founded Brannock Looms? ({i})"})

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        burst = [pool.submit(ask, i) for i in range(16)]
        time.sleep(0.3)  # the burst waits in the replicas' batch queues (600 ms)
        os.kill(victim, signal.SIGKILL)
        responses = [future.result() for future in burst]
    assert time.monotonic() - started < TIMEOUT_S + 5  # no request hangs
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, [r.text for r in responses if r.status_code not in (200, 503)]
    for response in responses:
        if response.status_code == 503:  # those queued on the killed replica
            assert "replica of pipeline 'bm25' died" in response.json()["detail"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = replicas(cluster)
        if len(now) == 2 and victim not in {actor.pid for actor in now}:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no replacement replica within 60 s: {now}")
    for i in range(4):
        assert ask(i).status_code == 200
    assert 'hopstack_errors_total{endpoint="/v1/retrieve",kind="unavailable"}' in server.get("/metrics").text
