"""Evaluate a running densekit server: send every query to its `POST /search` and collect
the hits as a TREC run, so a deployed service is measured exactly as users reach it.

Request and response follow service/schemas.py: `{query, top_k, rerank, rerank_top_n}` ->
`{hits: [{id, score, ...}]}`. Queries go out on a small thread pool (the server batches
concurrent requests); a failed request stops the evaluation with the server's message.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from densekit.errors import ConfigError, DensekitError
from densekit.eval.trec import Run


class EndpointError(DensekitError):
    """The server refused or failed a request."""


class HttpSearcher:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 120.0, concurrency: int = 4, client=None):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # `client` lets a caller hand in a configured httpx.Client (e.g. a test client).
        self.client = client or httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self.concurrency = max(1, concurrency)

    def _get(self, path: str) -> dict:
        import httpx

        try:
            r = self.client.get(path)
        except httpx.HTTPError as exc:
            raise EndpointError(f"cannot reach {self.url}{path}: {exc}") from None
        if r.status_code != 200:
            raise EndpointError(f"{self.url}{path} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def info(self) -> dict:
        return self._get("/info")

    def check(self, top_k: int, rerank: bool) -> dict:
        """Fail before sending thousands of queries if the server cannot serve them."""
        info = self.info()
        limit = (info.get("limits") or {}).get("max_top_k")
        if limit is not None and top_k > limit:
            raise ConfigError("top_k", f"{top_k} is above the server's max_top_k {limit}; pass --top-k {limit} or raise DENSEKIT_MAX_TOP_K")
        if rerank and not info.get("reranker"):
            raise ConfigError("reranker", f"the server at {self.url} has no reranker loaded")
        if not info.get("index"):
            raise ConfigError("endpoint", f"the server at {self.url} has no index loaded")
        return info

    def search_one(
        self, query: str, top_k: int, rerank: bool = False, rerank_top_n: int | None = None, search_params: dict | None = None
    ) -> dict[str, float]:
        import httpx

        body: dict = {"query": query, "top_k": top_k}
        if rerank:
            body["rerank"] = True
            if rerank_top_n:
                body["rerank_top_n"] = rerank_top_n
        if search_params:
            body["search_params"] = search_params
        for attempt in range(5):
            try:
                r = self.client.post("/search", json=body)
            except httpx.HTTPError as exc:
                raise EndpointError(f"POST {self.url}/search failed: {exc}") from None
            if r.status_code == 429 and attempt < 4:  # overloaded: back off, the queue drains
                time.sleep(0.2 * 2**attempt)
                continue
            break
        if r.status_code != 200:
            raise EndpointError(f"POST {self.url}/search answered {r.status_code} for query {query[:60]!r}: {r.text[:300]}")
        return {h["id"]: float(h["score"]) for h in r.json()["hits"]}

    def retrieve(
        self,
        queries: dict[str, str],
        top_k: int,
        rerank: bool = False,
        rerank_top_n: int | None = None,
        search_params: dict | None = None,
        progress: bool = True,
    ) -> tuple[Run, dict[str, float]]:
        from tqdm.auto import tqdm

        qids = list(queries)
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(self.concurrency)
        futures = [pool.submit(self.search_one, queries[q], top_k, rerank, rerank_top_n, search_params) for q in qids]
        run: Run = {}
        try:
            for qid, fut in tqdm(zip(qids, futures), total=len(qids), desc=f"POST {self.url}/search", disable=not progress):
                run[qid] = fut.result()
        finally:
            # On the first failure, queued queries are dropped instead of still being sent.
            pool.shutdown(wait=True, cancel_futures=True)
        return run, {"http_search_s": time.perf_counter() - t0}

    def close(self) -> None:
        self.client.close()
