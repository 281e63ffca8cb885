"""What every stage of one pipeline run shares: the config, the output folder, the settings,
and where each stage's outputs are (so a stage can name another's before it has run)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from densekit.eval.cell import safe_name
from densekit.fusion import FusionSettings
from densekit.pipeline.config import PER_TARGET, PipelineConfig, TargetSpec
from densekit.settings import Settings

# What a stage's identity holds in place of the model the select stage picks at run time.
FROM_SELECT_STAGE = "<from the select stage>"


@dataclass
class Context:
    cfg: PipelineConfig
    out: Path  # absolute
    settings: Settings
    resolve_data: Callable[[str], Path]
    progress: bool = True
    log: Callable[[str], None] = print
    target: str | None = None  # the target the per-target stages work for (None: no targets)

    @property
    def stages(self):
        return self.cfg.stages

    def has(self, stage: str) -> bool:
        return getattr(self.cfg.stages, stage) is not None

    def targets(self) -> list[str | None]:
        """The targets the per-target stages run for ([None] without targets)."""
        return list(self.cfg.targets) if self.cfg.targets else [None]

    def for_target(self, target: str | None) -> Context:
        return dataclasses.replace(self, target=target)

    def target_spec(self) -> TargetSpec | None:
        return self.cfg.targets[self.target] if self.cfg.targets and self.target is not None else None

    def stage_dir(self, stage: str) -> Path:
        root = self.out
        if self.target is not None and stage in PER_TARGET:
            root = self.out / "targets" / self.target
        if stage == "serve" and self.cfg.stages.serve is not None:
            return root / self.cfg.stages.serve.folder
        return root / stage

    # ---- the corpus and the tuning split of this target (or of the index stage) ----------

    def index_data(self) -> str:
        spec = self.target_spec()
        data = spec.data if spec is not None else self.stages.index.data
        assert data is not None, "checked by the config"
        return data

    def tuning_split(self, stage: str) -> tuple[str, str] | None:
        """(dataset, split) the select or fusion stage chooses on; None: it takes its defaults."""
        spec = self.target_spec()
        if spec is not None:
            return (spec.tune.data or spec.data, spec.tune.split) if spec.tune is not None else None
        split = getattr(self.stages, stage).split
        return (self.index_data(), split) if split is not None else None

    # ---- outputs of one stage that others read ----------------------------------------

    def mined_file(self, label: str) -> Path:
        return self.stage_dir("mine") / f"{safe_name(label)}.jsonl"

    def biencoder_model(self) -> str:
        """The trained bi-encoder: the biencoder stage's, else the pipeline's model."""
        return str(self.stage_dir("biencoder") / "model") if self.has("biencoder") else self.cfg.model

    def base_model(self) -> str:
        """The model before any training: the biencoder stage's base, else the pipeline's."""
        return self.stages.biencoder.model if self.has("biencoder") else self.cfg.model

    def choice_file(self) -> Path:
        return self.stage_dir("select") / "choice.json"

    def interpolated_model(self, weight: float) -> str:
        """The model of weight w: the base (0), the fine-tuned one (1), else the select stage's copy."""
        if weight == 0.0:
            return self.base_model()
        if weight == 1.0:
            return self.biencoder_model()
        return str(self.stage_dir("select") / "candidates" / f"w{weight:g}")

    def retriever_model(self) -> str:
        """The bi-encoder of the index, eval and serve stages: the select stage's choice, else
        the trained one (else the pipeline's)."""
        if self.has("select"):
            return self.interpolated_model(self.chosen_weight())
        return self.biencoder_model()

    def chosen_weight(self) -> float:
        """The select stage's weight; InvalidInputError when its choice file is missing or unreadable."""
        import json

        from densekit.errors import InvalidInputError

        path = self.choice_file()
        try:
            weight = float(json.loads(path.read_text(encoding="utf-8"))["weight"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}: no readable select choice ({exc}); re-run with --from select") from None
        if not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"{path}: weight {weight} is not within [0, 1]; re-run with --from select")
        return weight

    def retriever_identity(self) -> str:
        """retriever_model() as a stage identity holds it (known before the select stage runs)."""
        return FROM_SELECT_STAGE if self.has("select") else self.biencoder_model()

    def retriever_stage(self) -> list[str]:
        """The stage whose output retriever_model() is ([] when it is the pipeline's model)."""
        return ["select"] if self.has("select") else ["biencoder"] if self.has("biencoder") else []

    def index_folder(self) -> Path:
        return self.stage_dir("index") / "index"

    def fusion_file(self) -> Path:
        return self.stage_dir("fusion") / "fusion.json"

    def reranker_model(self) -> Path:
        return self.stage_dir("reranker") / "model"

    def fusion_settings(self) -> FusionSettings:
        """The tuned fusion when a fusion stage ran, else the index stage's (else RRF)."""
        if self.has("fusion"):
            import json

            best = json.loads(self.fusion_file().read_text(encoding="utf-8"))["best"]
            return FusionSettings(**{k: v for k, v in best.items() if k in FusionSettings.model_fields})
        return self.stages.index.fusion if self.has("index") else FusionSettings()

    def label(self, stage: str) -> str:
        return f"{stage}[{self.target}]" if self.target is not None and stage in PER_TARGET else stage

    @property
    def device(self) -> str:
        return self.cfg.device
