"""What every stage of one pipeline run shares: the config, the output folder, the settings,
and where each stage's outputs are (so a stage can name another's before it has run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from densekit.eval.cell import safe_name
from densekit.fusion import FusionSettings
from densekit.pipeline.config import PipelineConfig
from densekit.settings import Settings


@dataclass
class Context:
    cfg: PipelineConfig
    out: Path  # absolute
    settings: Settings
    resolve_data: Callable[[str], Path]
    progress: bool = True
    log: Callable[[str], None] = print

    @property
    def stages(self):
        return self.cfg.stages

    def has(self, stage: str) -> bool:
        return getattr(self.cfg.stages, stage) is not None

    def stage_dir(self, stage: str) -> Path:
        if stage == "serve" and self.cfg.stages.serve is not None:
            return self.out / self.cfg.stages.serve.folder
        return self.out / stage

    # ---- outputs of one stage that others read ----------------------------------------

    def mined_file(self, label: str) -> Path:
        return self.stage_dir("mine") / f"{safe_name(label)}.jsonl"

    def biencoder_model(self) -> str:
        """The bi-encoder the later stages use: the biencoder stage's, else the pipeline's."""
        return str(self.stage_dir("biencoder") / "model") if self.has("biencoder") else self.cfg.model

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

    @property
    def device(self) -> str:
        return self.cfg.device
