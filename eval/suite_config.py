"""Configuration of a multi-dataset, multi-configuration evaluation (`densekit eval --config`).

A YAML file (or repeated CLI flags) names datasets and configurations; every configuration
is evaluated on every dataset. A configuration's first stage is one of:

- `model`: a bi-encoder; the dataset's corpus is encoded (cached) into a flat index;
- `index`: an index folder, which belongs to one corpus: a mapping `{dataset: folder}`, or
  a string with a `{dataset}` placeholder;
- `endpoint`: a running densekit server (`POST /search`), same forms as `index`.

`mode` picks dense, lexical (BM25) or hybrid retrieval for an in-process first stage (default:
the index's stored mode, or dense for a model); a model with `mode: lexical` needs no model at
all (the corpus is indexed by BM25 in memory), and `mode: hybrid` fuses the model's dense run
with BM25 (`fusion`, `alpha`; default: the index's settings, else RRF).

`reranker` (optional) reranks the first stage's top `rerank_top_n` (in-process with
`densekit.rerankers`, or the server's own reranker for an endpoint).

Example:

    datasets: [scifact, {name: nfcorpus, split: test}]
    configurations:
      - {name: minilm, model: sentence-transformers/all-MiniLM-L6-v2}
      - {name: minilm+ce, model: sentence-transformers/all-MiniLM-L6-v2, reranker: runs/ce, rerank_top_n: 100}
      - {name: served, endpoint: "http://127.0.0.1:8000"}
    top_k: 1000
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from densekit.errors import ConfigError


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="BEIR folder, or a name under DENSEKIT_DATA_DIR")
    split: str = Field("test", description="qrels split")
    label: str | None = Field(None, description="name in the report (default: the folder name)")
    ignore_identical_ids: bool = Field(False, description="BEIR option: drop a document whose id equals the query id")


PerDataset = str | dict[str, str]


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="column/row label in the report (default: derived)")
    model: str | None = Field(None, description="bi-encoder (hub name or path); with `index`, overrides the index's encoder")
    index: PerDataset | None = Field(None, description="index folder per dataset: {dataset: folder} or 'path/{dataset}'")
    endpoint: PerDataset | None = Field(None, description="densekit server URL per dataset: {dataset: url} or a URL")
    api_key: str | None = Field(None, description="API key for the endpoint (Bearer)")
    reranker: str | None = Field(None, description="reranker model (cross-encoder or LLM); for an endpoint, 'server' uses its own")
    rerank_top_n: int = Field(100, ge=1, description="first-stage hits passed to the reranker")
    search_params: dict[str, int | float] | None = Field(None, description="index search parameters, e.g. {nprobe: 32}")
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="dense, lexical (BM25) or hybrid first stage (default: the index's mode, else dense)"
    )
    fusion: Literal["rrf", "convex"] | None = Field(None, description="hybrid: rrf or convex (default: the index's, else rrf)")
    alpha: float | None = Field(None, ge=0, le=1, description="hybrid, convex: weight of the dense scores (default: the index's, else 0.5)")

    @model_validator(mode="after")
    def _one_first_stage(self) -> RunConfig:
        if self.endpoint is not None and (self.index is not None or self.model is not None):
            raise ValueError("an endpoint configuration takes neither model nor index (the server has its own)")
        if self.endpoint is not None and (self.mode, self.fusion, self.alpha) != (None, None, None):
            raise ValueError(
                "an endpoint configuration searches in the server's own mode (mode, fusion and alpha are for in-process first stages)"
            )
        return self

    def first_stage(self) -> str:
        return "endpoint" if self.endpoint is not None else "index" if self.index is not None else "model"

    def resolve(self, field: str, dataset: str) -> str | None:
        """The index folder or endpoint URL of this configuration for one dataset (None: not
        defined for it, so the cell is skipped)."""
        value = getattr(self, field)
        if value is None:
            return None
        if isinstance(value, dict):
            return value.get(dataset)
        return value.replace("{dataset}", dataset)

    def default_name(self, default_model: str) -> str:
        if self.endpoint is not None:
            base = "endpoint"
            if isinstance(self.endpoint, str) and "{dataset}" not in self.endpoint:
                base = re.sub(r"^https?://", "", self.endpoint).rstrip("/")
        elif self.index is not None:
            base = "index"
            if isinstance(self.index, str):
                base = Path(self.index.replace("{dataset}", "")).name or Path(self.index).parent.name or "index"
        elif self.mode == "lexical":
            base = "bm25"
        else:
            base = Path((self.model or default_model).rstrip("/")).name
        if self.mode == "hybrid" or (self.mode == "lexical" and self.index is not None):
            base += f"+{self.mode}"
        if self.reranker:
            base += "+" + Path(self.reranker.rstrip("/")).name
        return base


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec] = Field(..., min_length=1, description="datasets to evaluate on")
    configurations: list[RunConfig] = Field(..., min_length=1, description="first stage (+ reranker) setups")
    top_k: int = Field(1000, ge=1, description="documents retrieved per query")
    auc_negatives: int = Field(500, ge=1, description="top-N retrieved non-relevant documents used as AUC negatives")
    precision_target: float = Field(0.9, gt=0, le=1, description="calibration: the score threshold keeping this precision")
    calibration_depth: int = Field(1, ge=1, description="calibration: also over each query's top-N hits (1: is the top hit good?)")
    significance_metric: str = Field("ndcg@10", description="metric of the paired tests against the first configuration")
    plots: bool = Field(True, description="write ROC, Recall@k and calibration PNGs")
    out: str | None = Field(None, description="report folder (the CLI's --out wins)")

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_to_specs(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": d} if isinstance(d, str) else d for d in v]
        return v

    def named_configurations(self, default_model: str) -> list[tuple[str, RunConfig]]:
        """Configurations with unique names (a repeated name gets a -2, -3 suffix)."""
        out: list[tuple[str, RunConfig]] = []
        seen: dict[str, int] = {}
        for c in self.configurations:
            base = c.name or c.default_name(default_model)
            n = seen.get(base, 0) + 1
            seen[base] = n
            out.append((base if n == 1 else f"{base}-{n}", c))
        return out


def _first_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
    return ConfigError(loc, err.get("msg", "invalid value"))


def suite_from_dict(data: dict[str, Any]) -> SuiteConfig:
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None


def load_suite_config(path: str | Path) -> SuiteConfig:
    from densekit.yaml_file import read_yaml_file

    p = Path(path)
    data = read_yaml_file(p, what="evaluation config")
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{p} must hold a mapping with 'datasets' and 'configurations'")
    return suite_from_dict(data)
