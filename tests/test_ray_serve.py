"""`densekit serve --engine ray` on a real local Ray cluster: one application (2 shards of a
flat index, the tiny encoder and cross-encoder) deployed once for the module, compared over
HTTP with the single-process server on a copy of the same folder; writes routed to the owning
shard; a dead shard answered with 503 or a marked partial answer; a killed shard replica
answered with 200 or 503 only, and replaced."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from densekit.errors import ConfigError
from densekit.index.sharded_manifest import shard_of
from densekit.settings import Settings

DOCS = [(f"d{i}", f"title {i}", f"document number {i} about {w}") for i, w in enumerate("cats dogs paris python faiss rome".split() * 5)]
QUERIES = ["about rome", "about python", "document number 7", "cats and dogs"]


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory, tiny_st_model_dir):
    from densekit.index.embedding_encode import EncodeOptions, encode_corpus_to_shards
    from densekit.index.sharded_build import build_sharded

    base = tmp_path_factory.mktemp("ray-serve")
    data = base / "data"
    data.mkdir()
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    encode_corpus_to_shards(data, base / "emb", EncodeOptions(model=str(tiny_st_model_dir), device="cpu"), shard_size=8, progress=False)
    build_sharded(base / "emb", base / "sharded", 2)
    return base / "sharded"


def _settings(index_dir, model_dir, ce_dir, port: int = 8000) -> Settings:
    return Settings(index_dir=index_dir, model=str(model_dir), reranker=str(ce_dir), device="cpu", torch_threads=1, port=port)


@pytest.fixture(scope="module")
def reference(sharded_dir, tiny_st_model_dir, tiny_ce_dir, tmp_path_factory):
    """The single-process server over its own copy of the folder."""
    from fastapi.testclient import TestClient

    from densekit.service.app import create_app

    copy = tmp_path_factory.mktemp("ref") / "sharded"
    shutil.copytree(sharded_dir, copy)
    with TestClient(create_app(_settings(copy, tiny_st_model_dir, tiny_ce_dir))) as client:
        yield client


@pytest.fixture(scope="module")
def served(ray_cluster, sharded_dir, tiny_st_model_dir, tiny_ce_dir, tmp_path_factory):
    """The Ray Serve application on a free port: (base URL, settings)."""
    from conftest import free_port
    from ray import serve

    from densekit.service.distributed.deploy import ServeOptions, deploy, undeploy

    copy = tmp_path_factory.mktemp("served") / "sharded"
    shutil.copytree(sharded_dir, copy)
    settings = _settings(copy, tiny_st_model_dir, tiny_ce_dir, port=free_port())
    took = deploy(settings, ServeOptions(replica_cpus=0.25, call_timeout_s=20))
    print(f"\nRay Serve application up in {took:.1f}s (cluster start {ray_cluster:.1f}s)")
    try:
        yield f"http://127.0.0.1:{settings.port}", settings
    finally:
        undeploy()
        serve.shutdown()


def _without_timing(body):
    if isinstance(body, dict):
        return {k: _without_timing(v) for k, v in body.items() if k != "took_ms"}
    if isinstance(body, list):
        return [_without_timing(v) for v in body]
    return body


def _assert_close(got, want):
    """Equal JSON, numbers within 1e-5 (two processes run the same model on the same CPU)."""
    got, want = _without_timing(got), _without_timing(want)
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for k in want:
            _assert_close(got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            _assert_close(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5)
    else:
        assert got == want


@pytest.mark.slow
def test_routes_answer_as_the_single_process_server(served, reference):
    import httpx

    url, _ = served
    requests = [
        ("/search", {"query": "about rome", "top_k": 5}),
        ("/search", {"queries": QUERIES, "top_k": 8}),
        ("/search", {"query": "about faiss", "top_k": 3, "rerank": True, "rerank_top_n": 10}),
        ("/search", {"query": "about faiss", "top_k": 3, "search_params": {"nprobe": 4}}),  # refused alike: flat has no nprobe
        ("/search", {"query": "about faiss", "mode": "lexical"}),  # refused alike: no BM25 part
        ("/embed", {"inputs": ["about rome", "cats"]}),
        ("/embed", {"inputs": "about rome", "prompt_name": "query", "normalize": False}),
        ("/v1/embeddings", {"input": ["about rome", "dogs"]}),
        ("/rerank", {"query": "about faiss", "texts": ["faiss is a library", "rome is a city"], "return_text": True}),
        ("/v2/rerank", {"query": "about faiss", "documents": ["faiss is a library", "rome"], "max_tokens_per_doc": 2}),
        ("/search", {"query": "", "top_k": 5}),
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/ready").status_code == 200
        for path, body in requests:
            got, want = client.post(path, json=body), reference.post(path, json=body)
            assert got.status_code == want.status_code, (path, body, got.text, want.text)
            got_body, want_body = got.json(), want.json()
            if path == "/v2/rerank":  # the request's id: Ray Serve's proxy gives each request its own
                assert got_body.pop("id") and want_body.pop("id")
            _assert_close(got_body, want_body)
        info, want_info = client.get("/info").json(), reference.get("/info").json()
        assert info["index"]["documents"] == want_info["index"]["documents"] == len(DOCS)
        assert info["index"]["faiss"] == want_info["index"]["faiss"] and info["model"] == want_info["model"]
        assert "Ray Serve replica" in info["backend"]
        assert "densekit_requests_total" in client.get("/metrics").text


@pytest.fixture()
def gone_actor(ray_cluster):
    """A real Ray actor that has been killed: calls to it fail as calls to a dead replica do."""
    import ray

    @ray.remote(num_cpus=0)
    class Gone:
        def status(self): ...
        def search(self, *args): ...
        def get(self, *args): ...

    actor = Gone.remote()  # type: ignore[attr-defined]
    ray.get(actor.status.remote())
    ray.kill(actor)
    return actor


@pytest.mark.slow
@pytest.mark.parametrize("allow_partial", [False, True])
def test_a_dead_shard_gives_503_or_a_marked_partial_answer(served, reference, gone_actor, allow_partial):
    from fastapi.testclient import TestClient
    from ray import serve

    from densekit.index.sharded_manifest import read_sharded_manifest
    from densekit.service.app import create_app
    from densekit.service.distributed.deploy import APP_NAME
    from densekit.service.distributed.ingress import FanoutOptions, load_remote_state

    _, settings = served
    handle = serve.get_deployment_handle
    sharded = read_sharded_manifest(settings.index_dir)

    async def loader(s, metrics):
        shards = [handle("shard-00000", app_name=APP_NAME), gone_actor]
        return await load_remote_state(
            s, metrics, sharded, FanoutOptions(allow_partial, 10.0), handle("encoder", app_name=APP_NAME), shards
        )

    with TestClient(create_app(settings.model_copy(update={"reranker": None}), loader=loader)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "shard-00001" in ready.json()["error"]
        assert client.post("/embed", json={"inputs": "still embeds"}).status_code == 200
        r = client.post("/search", json={"query": "about rome", "top_k": 5})
        if not allow_partial:
            assert r.status_code == 503 and r.json()["error_type"] == "shard_unavailable", r.text
            assert "shard-00001" in r.json()["error"] and "--allow-partial" in r.json()["error"]
            return
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["partial"] is True and body["missing_shards"] == ["shard-00001"]
        # exactly the single-process answer's hits that live on the shard still up
        full = reference.post("/search", json={"query": "about rome", "top_k": 30}).json()["hits"]
        want = [h["id"] for h in full if shard_of(h["id"], 2) == 0][:5]
        assert [h["id"] for h in body["hits"]] == want


@pytest.mark.slow
def test_upsert_lands_on_the_owning_shard_and_is_found(served, reference):
    import httpx
    from ray import serve

    from densekit.service.distributed.deploy import APP_NAME

    url, _ = served
    new = [{"id": f"zebra-{i}", "title": "Zebra", "text": f"zebras are striped horses number {i}"} for i in range(2, 6)]
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/documents", json={"documents": new})
        assert r.status_code == 200, r.text
        assert r.json() == {"upserted": 4, "documents": len(DOCS) + 4}
        assert reference.post("/documents", json={"documents": new}).json() == r.json()
        query = {"query": "zebras are striped horses number 2", "top_k": 10}
        hits = client.post("/search", json=query).json()["hits"]
        assert hits[0]["id"] == "zebra-2"
        _assert_close(hits, reference.post("/search", json=query).json()["hits"])
        assert client.get("/documents/zebra-3").json()["title"] == "Zebra"
        owners = {d["id"]: shard_of(d["id"], 2) for d in new}
        assert sorted(owners.values()) == [0, 0, 1, 1]  # the write spanned both shards
        for s in (0, 1):
            handle = serve.get_deployment_handle(f"shard-{s:05d}", app_name=APP_NAME)
            for doc_id, owner in owners.items():
                held = handle.get.remote(doc_id).result().unwrap()
                assert (held is not None) == (owner == s), (doc_id, s)
        assert client.delete("/documents/zebra-5").status_code == 200
        assert reference.delete("/documents/zebra-5").status_code == 200
        assert client.get("/documents/zebra-5").status_code == 404
        assert client.delete("/documents/zebra-5").status_code == 404
        assert client.get("/info").json()["index"]["documents"] == len(DOCS) + 3


@pytest.mark.slow
def test_killed_shard_replica_gives_only_200_or_503_and_recovers(served, reference):
    import httpx
    import ray

    url, _ = served
    query = {"query": "document number 3", "top_k": 10}
    want = [h["id"] for h in reference.post("/search", json=query).json()["hits"]]
    seen: list[tuple[int, dict]] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                r = client.post("/search", json=query)
                seen.append((r.status_code, r.json()))

    def shard_replicas() -> list[dict]:
        return [a for a in ray.util.list_named_actors(all_namespaces=True) if "#shard-00001#" in a["name"]]

    replicas = shard_replicas()
    assert len(replicas) == 1, replicas
    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1)
    t_kill = time.monotonic()
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    ready_codes = []
    with httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready_codes.append(client.get("/ready").status_code)
            if ready_codes[-1] == 200 and time.monotonic() - t_kill > 5:
                break
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(90)
        recovered = time.monotonic() - t_kill
        final = client.post("/search", json=query)
    codes = [c for c, _ in seen]
    print(f"\nafter the kill: {codes.count(200)} x 200, {codes.count(503)} x 503; /ready {ready_codes}; recovered in {recovered:.1f}s")
    assert set(codes) <= {200, 503}, codes
    for code, body in seen:
        if code == 200:
            assert "partial" not in body and [h["id"] for h in body["hits"]] == want
        else:
            assert body["error_type"] == "shard_unavailable" and "shard-00001" in body["error"]
    assert ready_codes[-1] == 200, ready_codes
    replaced = shard_replicas()
    assert len(replaced) == 1 and replaced[0]["name"] != replicas[0]["name"], (replicas, replaced)  # Serve started a new one
    assert final.status_code == 200 and [h["id"] for h in final.json()["hits"]] == want


def test_engine_ray_refuses_an_unsharded_index(base_index):
    pytest.importorskip("ray")
    from densekit.service.distributed.deploy import ServeOptions, check_serve_options

    with pytest.raises(ConfigError, match="not a sharded index folder"):
        check_serve_options(Settings(index_dir=base_index), ServeOptions())
    with pytest.raises(ConfigError, match="--index"):
        check_serve_options(Settings(), ServeOptions())


def test_bad_ray_serve_options_are_refused(tmp_path):
    pytest.importorskip("ray")
    from densekit.service.distributed.deploy import ServeOptions, check_serve_options, parse_autoscale

    assert parse_autoscale("1:4") == (1, 4)
    for bad in ("4", "4:1", "a:b", "0:0"):
        with pytest.raises(ConfigError, match="autoscale"):
            parse_autoscale(bad)
    (tmp_path / "sharded_manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="one writer per shard"):
        check_serve_options(Settings(index_dir=tmp_path), ServeOptions(shard_replicas=2))


def test_engine_ray_without_the_extra_names_it(tmp_path, monkeypatch):
    from densekit.cli.serve_ray_cmd import serve_on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` then fails as where Ray is not installed
    with pytest.raises(ConfigError, match=r"densekit\[ray\]"):
        serve_on_ray(Settings(index_dir=tmp_path), None, 1, 1, 1, None, False, 30.0, 1.0, 0.0)


def test_the_single_process_server_does_not_import_ray():
    code = "import sys, densekit.service.app, densekit.cli.main; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-P", "-c", code], check=True, timeout=120)
