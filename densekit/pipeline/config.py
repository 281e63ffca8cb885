"""The pipeline config (YAML -> pydantic): where the outputs go and one section per stage.

Example (every stage is optional; the ones present run in the order of STAGES)::

    out: runs/pipelines/scifact-best     # every stage writes OUT/<stage>/
    device: auto
    model: all-MiniLM-L6-v2              # bi-encoder of the stages when no biencoder stage trains one
    stages:
      mine: {rank_start: 10, rank_end: 100, margin: 0.05, num_negatives: 4}     # training/biencoder_config.py MiningConfig
      biencoder: {model: all-MiniLM-L6-v2, data: {beir: scifact}, loss: {name: infonce}, train: {max_steps: 80}}
      index: {data: scifact, lexical: true, fusion: {method: rrf}}
      fusion: {split: train}              # fitted on the index dataset's train or dev split, never test
      reranker: {kind: cross-encoder, data: {beir: scifact}, train: {max_steps: 150}}
      eval: {datasets: [scifact], rerank_top_n: 20}
      serve: {rerank_top_n: 20}

`biencoder` and `reranker` take the sections of `densekit train biencoder` / `train reranker`
configs, less `output_dir` (the pipeline sets it). Unknown keys, unknown stage names, missing
datasets and model folders are ConfigErrors naming the file and the key, raised before any
stage runs.

Several corpora from one training run (`targets`): the shared stages (mine, biencoder,
reranker) run once; the per-target stages (select, index, fusion, eval, serve) run for each
target, each with its own folder and stamp under OUT/targets/<name>/, choosing their weights on
that target's own tuning split (or taking the configured defaults when it has none)::

    targets:
      scifact:  {data: scifact, tune: {data: runs/data/scifact-dev, split: dev}}
      nfcorpus: {data: nfcorpus, tune: {split: dev}}
      nq-utd:   {data: nq-utd}                 # no tuning split: select's default_weight, index's fusion
    stages:
      select: {weights: [0.0, 0.5, 1.0], default_weight: 0.5}   # WiSE-FT weight per target
      index: {lexical: true, fusion: {method: convex, alpha: 0.6}}  # no data: each target's
      fusion: {}                                                    # no split: each target's tune
      eval: {compare_stages: true}                                  # no datasets: each target's test
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from densekit.errors import ConfigError, DensekitError
from densekit.eval.fusion_tune import check_tuning_split
from densekit.eval.suite_config import DatasetSpec
from densekit.fusion import FusionSettings, SearchMode
from densekit.settings import DEFAULT_MODEL, Settings
from densekit.training.biencoder_config import BiEncoderRunConfig, MiningConfig
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.run_config import StrictConfig
from densekit.yaml_file import read_yaml_file

STAGES: tuple[str, ...] = ("mine", "biencoder", "select", "index", "fusion", "reranker", "eval", "serve")
# With targets, these run once per target (OUT/targets/<name>/<stage>); the others once.
PER_TARGET: tuple[str, ...] = ("select", "index", "fusion", "eval", "serve")

# Settings the serve stage writes itself (from the other stages' outputs).
SERVE_MANAGED = ("index_dir", "model", "reranker", "reranker_kind")


class MineStage(MiningConfig):
    """Hard negatives for every BEIR source of the biencoder stage, mined once with the base
    model; the biencoder stage reads them instead of mining (so retraining does not re-mine)."""

    model: str | None = Field(None, description="bi-encoder that mines (default: the biencoder stage's base model)")

    @model_validator(mode="after")
    def _not_run_fields(self):
        if taken := sorted({"enabled", "reuse"} & self.model_fields_set):
            raise ValueError(f"{', '.join(taken)}: not a mine stage setting (the stage itself mines)")
        return self


class BiencoderStage(BiEncoderRunConfig):
    """A `densekit train biencoder` config; the pipeline sets output_dir (and mining.reuse when
    a mine stage runs)."""

    output_dir: str = Field("", description="set by the pipeline: OUT/biencoder")

    @model_validator(mode="after")
    def _no_output_dir(self):
        if "output_dir" in self.model_fields_set:
            raise ValueError("output_dir is set by the pipeline (OUT/biencoder); leave it out")
        return self


class RerankerStage(RerankerRunConfig):
    """A `densekit train reranker` config; the pipeline sets output_dir, and
    negatives.retriever defaults to the biencoder stage's model."""

    output_dir: str = Field("", description="set by the pipeline: OUT/reranker")

    @model_validator(mode="after")
    def _no_output_dir(self):
        if "output_dir" in self.model_fields_set:
            raise ValueError("output_dir is set by the pipeline (OUT/reranker); leave it out")
        return self


class SelectStage(StrictConfig):
    """WiSE-FT (Wortsman et al. 2022): the bi-encoder used from here on is
    (1 - w) * base + w * fine-tuned, with w the grid weight of best dense nDCG@10 on the tuning
    split (ties go to the smaller w, nearer the base model). 0 (the base model) is always in the
    grid, so on the tuning split the choice never scores below the base model."""

    weights: list[float] = Field(
        [0.0, 0.5, 1.0], min_length=1, description="grid of w (0 = base model, 1 = fine-tuned); 0 is added if missing"
    )
    default_weight: float = Field(1.0, ge=0, le=1, description="w of a target without a tuning split")
    split: str | None = Field(None, description="without targets: split of the index dataset chosen on (dev or train, never test)")
    top_k: PositiveInt = Field(1000, description="documents retrieved per query on the tuning split")

    @field_validator("weights")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if bad := [w for w in v if not 0.0 <= w <= 1.0]:
            raise ValueError(f"weights must be within [0, 1], got {bad}")
        return sorted({0.0, *(round(float(w), 6) for w in v)})

    @field_validator("split")
    @classmethod
    def _not_test(cls, v: str | None) -> str | None:
        return _tuning_split(v)


def _tuning_split(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        check_tuning_split(v)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    return v


class TuneSplit(StrictConfig):
    data: str | None = Field(None, description="BEIR folder or name holding the split (default: the target's data)")
    split: str = Field(..., description="dev or train (never test)")

    @field_validator("split")
    @classmethod
    def _not_test(cls, v: str) -> str:
        return _tuning_split(v) or v


class TargetSpec(StrictConfig):
    data: str = Field(..., description="BEIR folder or name under DENSEKIT_DATA_DIR: the corpus indexed, served and evaluated")
    tune: TuneSplit | None = Field(None, description="split the select and fusion stages choose on (none: their defaults)")
    eval_split: str = Field("test", description="split the eval stage reports")


class IndexStage(StrictConfig):
    data: str | None = Field(
        None, description="BEIR folder or name under DENSEKIT_DATA_DIR whose corpus is indexed (and served); with targets: each target's"
    )
    model: str | None = Field(None, description="bi-encoder (default: the biencoder stage's model, else the pipeline's model)")
    kind: str = Field("flat", description="faiss kind: flat, ivf, ivfpq, opq-ivfpq, hnsw (see `densekit index build --help`)")
    build_params: dict[str, Any] = Field(default_factory=dict, description="build parameters of the kind (index/faiss_kinds.py)")
    search_params: dict[str, Any] = Field(default_factory=dict, description="default search parameters stored in the manifest")
    lexical: bool = Field(True, description="also build the BM25 part (lexical and hybrid search)")
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="default search mode (default: hybrid with lexical, else dense)"
    )
    fusion: FusionSettings = Field(default_factory=FusionSettings, description="hybrid fusion until a fusion stage tunes it")
    batch_size: PositiveInt | None = Field(None, description="encoding batch size (default: DENSEKIT_BATCH_SIZE)")

    @model_validator(mode="after")
    def _mode_needs_lexical(self):
        if self.resolved_mode() != "dense" and not self.lexical:
            raise ValueError(f"mode {self.mode} needs the BM25 part: set lexical: true")
        return self

    def resolved_mode(self) -> SearchMode:
        return self.mode or ("hybrid" if self.lexical else "dense")


class FusionStage(StrictConfig):
    split: str | None = Field(
        None,
        description="qrels split of the index's dataset the fusion is fitted on: dev or train (never test); with targets: each target's tune",
    )
    top_k: PositiveInt = Field(1000, description="documents retrieved per list before fusion")

    @field_validator("split")
    @classmethod
    def _not_test(cls, v: str | None) -> str | None:
        return _tuning_split(v)


class EvalStage(StrictConfig):
    datasets: list[DatasetSpec] | None = Field(
        None,
        min_length=1,
        description="datasets (and splits, default test) to evaluate on; with targets: each target's data and eval_split",
    )
    compare_stages: bool = Field(
        False,
        description="also evaluate the pipeline's base model (dense, listed first: the paired tests compare against it) and, "
        "for a hybrid first stage, its dense part alone",
    )
    model: str | None = Field(None, description="first-stage bi-encoder (default: the biencoder stage's model, else the pipeline's)")
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="first stage (default: the index stage's mode, else dense)"
    )
    rerank: bool = Field(True, description="with a reranker stage: also evaluate its model on the first stage's top rerank_top_n")
    rerank_top_n: PositiveInt = Field(100, description="first-stage hits reranked per query")
    top_k: PositiveInt = Field(1000, description="documents retrieved per query")
    auc_negatives: PositiveInt = Field(500, description="top-N retrieved non-relevant documents used as AUC negatives")
    plots: bool = Field(False, description="write ROC, Recall@k and calibration PNGs")

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_to_specs(cls, v: Any) -> Any:
        return [{"name": d} if isinstance(d, str) else d for d in v] if isinstance(v, list) else v


class ServeStage(StrictConfig):
    folder: str = Field("serve", description="the servable folder, under OUT")
    rerank_top_n: PositiveInt | None = Field(None, description="the server's default rerank_top_n (default: the eval stage's)")
    settings: dict[str, Any] = Field(default_factory=dict, description="more server settings for serve.yaml (names of `densekit serve`)")

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key not in Settings.model_fields:
                raise ValueError(f"unknown server setting '{key}'")
            if key in SERVE_MANAGED:
                raise ValueError(f"'{key}' is set by the serve stage from the other stages' outputs")
        return v

    @field_validator("folder")
    @classmethod
    def _inside(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or p.name in STAGES:
            raise ValueError(f"must be a folder name under OUT other than a stage's, got {v!r}")
        return v


class Stages(StrictConfig):
    mine: MineStage | None = None
    biencoder: BiencoderStage | None = None
    select: SelectStage | None = None
    index: IndexStage | None = None
    fusion: FusionStage | None = None
    reranker: RerankerStage | None = None
    eval: EvalStage | None = None
    serve: ServeStage | None = None


class PipelineConfig(StrictConfig):
    out: str = Field(..., description="output folder: OUT/<stage>/ per stage, OUT/pipeline_log.jsonl")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N (every stage)")
    model: str = Field(DEFAULT_MODEL, description="bi-encoder of the stages when no biencoder stage trains one")
    targets: dict[str, TargetSpec] | None = Field(
        None, min_length=1, description="corpora each given their own select, index, fusion, eval and serve stages"
    )
    stages: Stages

    @field_validator("targets")
    @classmethod
    def _target_names(cls, v: dict[str, TargetSpec] | None) -> dict[str, TargetSpec] | None:
        for name in v or {}:
            if not name or "/" in name or name.startswith(".") or name != name.strip():
                raise ValueError(f"a target name is a plain folder name, got {name!r}")
        return v

    def enabled(self) -> list[str]:
        return [name for name in STAGES if getattr(self.stages, name) is not None]


def check_stage_combination(cfg: PipelineConfig) -> None:
    """Stages that need another stage, or settings that clash across stages: ConfigError
    naming the stage's key."""
    s = cfg.stages
    if not cfg.enabled():
        raise ConfigError("stages", f"no stage configured (stages: {', '.join(STAGES)})")
    if s.mine is not None:
        if s.biencoder is None:
            raise ConfigError("stages.mine", "mines for the biencoder stage: add stages.biencoder")
        if s.biencoder.mining.enabled or s.biencoder.mining.reuse:
            raise ConfigError("stages.biencoder.mining", "with a mine stage, leave mining to it (enabled and reuse unset)")
        if not any(src.beir for _, src in s.biencoder.data.sources()):
            raise ConfigError("stages.mine", "needs a biencoder source with beir (negatives are mined from its corpus)")
    for name in ("fusion", "serve"):
        if getattr(s, name) is not None and s.index is None:
            raise ConfigError(f"stages.{name}", "works on the index stage's folder: add stages.index")
    if s.fusion is not None and s.index is not None and not s.index.lexical:
        raise ConfigError("stages.fusion", "tunes hybrid search: the index stage needs lexical: true")
    if s.select is not None and s.biencoder is None:
        raise ConfigError("stages.select", "interpolates the base and the fine-tuned model: add stages.biencoder")
    if cfg.targets is None:
        _check_single_target(cfg)
    else:
        _check_targets(cfg)


def _check_single_target(cfg: PipelineConfig) -> None:
    s = cfg.stages
    if s.index is not None and s.index.data is None:
        raise ConfigError("stages.index.data", "the corpus to index: a dataset name or folder (or give targets)")
    if s.fusion is not None and s.fusion.split is None:
        raise ConfigError("stages.fusion.split", "the split the fusion is fitted on: dev or train")
    if s.select is not None:
        if s.select.split is None:
            raise ConfigError("stages.select.split", "the split of the index dataset the weight is chosen on: dev or train")
        if s.index is None:
            raise ConfigError("stages.select", "chooses on the index stage's dataset: add stages.index")
    if s.eval is not None and s.eval.datasets is None:
        raise ConfigError("stages.eval.datasets", "the datasets to evaluate on (or give targets)")


def _check_targets(cfg: PipelineConfig) -> None:
    s = cfg.stages
    for name, field in (("index", "data"), ("fusion", "split"), ("select", "split"), ("eval", "datasets")):
        section = getattr(s, name)
        if section is not None and getattr(section, field) is not None:
            raise ConfigError(f"stages.{name}.{field}", "with targets, each target gives this: leave it out")
    if s.index is None and any(getattr(s, n) is not None for n in ("fusion", "eval", "serve")):
        raise ConfigError("stages.index", "with targets, the per-target stages need the index stage")


def _error(exc: ValidationError, path: Path) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        if len(loc) == 2 and loc[0] == "stages":
            msg = f"unknown stage (stages: {', '.join(STAGES)})"
        else:
            msg = "unknown field"
    return ConfigError(".".join(loc) or "<root>", f"{msg} (in {path})")


def parse_pipeline_config(data: Any, path: str | Path) -> PipelineConfig:
    """Validate a parsed YAML mapping; ConfigError naming the key and the file."""
    path = Path(path)
    if not isinstance(data, dict):
        raise ConfigError("<root>", f"{path} must hold a mapping with 'out' and 'stages'")
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _error(exc, path) from None
    try:
        check_stage_combination(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.field, f"{exc.message} (in {path})") from None
    return cfg


def load_pipeline_config(path: str | Path, resolve_data: Callable[[str], Path] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; with `resolve_data`, also check that every dataset,
    split and local model folder it names exists."""
    path = Path(path)
    data = read_yaml_file(path, what="pipeline config")
    cfg = parse_pipeline_config(data, path)
    if resolve_data is not None:
        check_inputs(cfg, resolve_data, path)
    return cfg


def _check_model(field: str, name: str | None) -> None:
    from densekit.models import resolve_encoder_name

    if name is None:
        return
    looks_local = name.startswith((".", "/", "~"))
    if looks_local and not Path(resolve_encoder_name(name)).expanduser().exists():
        raise ConfigError(field, f"model folder not found: {name}")


def _check_split(field: str, name: str, split: str, resolve_data: Callable[[str], Path]) -> None:
    try:
        folder = Path(resolve_data(name))
    except DensekitError as exc:
        raise ConfigError(field, str(exc)) from None
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise ConfigError(field, f"dataset '{name}' has no '{split}' split (its splits: {', '.join(splits) or 'none'})")


def check_inputs(cfg: PipelineConfig, resolve_data: Callable[[str], Path], path: str | Path) -> None:
    """Every dataset, split and local model folder the stages name exists (ConfigError naming
    the key and the file otherwise)."""
    from densekit.training.biencoder_config import check_paths as check_biencoder
    from densekit.training.rerank.run import check_paths as check_reranker

    s = cfg.stages
    where = f" (in {path})"
    try:
        _check_model("model", cfg.model)
        if s.mine is not None:
            _check_model("stages.mine.model", s.mine.model)
        for name, check in (("biencoder", check_biencoder), ("reranker", check_reranker)):
            section = getattr(s, name)
            if section is None:
                continue
            try:
                check(section.model_copy(update={"output_dir": "."}), resolve_data)
                _check_model("model", section.model)
            except ConfigError as exc:
                raise ConfigError(f"stages.{name}.{exc.field}", exc.message) from None
        if s.index is not None:
            from densekit.index import faiss_kinds

            _check_model("stages.index.model", s.index.model)
            try:
                faiss_kinds.parse_build_params(s.index.kind, s.index.build_params)
                faiss_kinds.parse_search_params(s.index.kind, s.index.search_params)
            except ConfigError as exc:
                raise ConfigError(f"stages.index.{exc.field.lstrip('-')}", exc.message) from None
            try:
                if s.index.data is not None:
                    resolve_data(s.index.data)
            except DensekitError as exc:
                raise ConfigError("stages.index.data", str(exc)) from None
        if s.index is not None and s.index.data is not None:
            if s.fusion is not None and s.fusion.split is not None:
                _check_split("stages.fusion.split", s.index.data, s.fusion.split, resolve_data)
            if s.select is not None and s.select.split is not None:
                _check_split("stages.select.split", s.index.data, s.select.split, resolve_data)
        if s.eval is not None:
            _check_model("stages.eval.model", s.eval.model)
            for i, spec in enumerate(s.eval.datasets or []):
                _check_split(f"stages.eval.datasets.{i}", spec.name, spec.split, resolve_data)
        for name, target in (cfg.targets or {}).items():
            try:
                resolve_data(target.data)
            except DensekitError as exc:
                raise ConfigError(f"targets.{name}.data", str(exc)) from None
            if s.eval is not None:
                _check_split(f"targets.{name}.eval_split", target.data, target.eval_split, resolve_data)
            if target.tune is not None:
                _check_split(f"targets.{name}.tune", target.tune.data or target.data, target.tune.split, resolve_data)
                tune_folder = Path(resolve_data(target.tune.data or target.data)).resolve()
                if tune_folder == Path(resolve_data(target.data)).resolve() and target.tune.split == target.eval_split:
                    raise ConfigError(
                        f"targets.{name}.tune",
                        f"chooses on '{target.eval_split}', the split it reports: its scores would be an overestimate",
                    )
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.message + where) from None
