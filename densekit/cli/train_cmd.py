"""`densekit train`: bi-encoders, rerankers and distilled indexes from YAML configs."""
from __future__ import annotations

import typer

app = typer.Typer(help="Train bi-encoders, rerankers and distilled indexes.", no_args_is_help=True)
