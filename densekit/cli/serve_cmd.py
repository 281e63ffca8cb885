"""`densekit serve`: run the HTTP service under uvicorn.

Its flags are generated from the `Settings` model: one flag per setting, named after the
field (`max_top_k` -> `--max-top-k`), with the field's description as help, so a new setting
gets its flag without touching this file. A few flags keep a second, older spelling.
"""

from __future__ import annotations

import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from densekit.errors import ConfigError
from densekit.settings import Settings

ENV_PREFIX = "DENSEKIT_"

# Older spellings that stay accepted (README and deployments use them).
ALIASES = {"index_dir": ("--index",), "api_keys": ("--api-key",), "cors_origins": ("--cors-origin",)}
# Boolean settings as on/off flag pairs; the off names keep the documented spellings.
OFF_FLAGS = {"allow_updates": "--read-only", "log_json": "--log-text"}
# What the serve command adds to a field's own description.
NOTES = {
    "model": "default: the index's own encoder when an index is served",
    "workers": "more than 1 needs --read-only",
    "api_keys": "repeatable; prefer the environment variable, which ps does not show",
    "cors_origins": "repeatable",
}


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _option_type(annotation: Any) -> Any:
    """The type typer parses a setting as: `X | None` -> X (every flag defaults to unset)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list


def _option(field: str, info: FieldInfo) -> tuple[Any, Any]:
    """(type, typer.Option) of one setting's flag."""
    tp = _option_type(info.annotation)
    default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    shown = "unset" if default is None else _env_value(default)
    parts = [info.description or field, NOTES.get(field, "")]
    help_text = "; ".join(p for p in parts if p) + f" (env {env_name(field)}, default: {shown})"
    if tp is bool:
        decl = f"{flag_name(field)}/{OFF_FLAGS.get(field, '--no-' + field.replace('_', '-'))}"
        return bool | None, typer.Option(None, decl, help=help_text, show_default=False)
    return tp | None, typer.Option(None, flag_name(field), *ALIASES.get(field, ()), help=help_text, show_default=False)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def settings_from_flags(values: dict[str, Any]) -> Settings:
    """Put the given flags into the environment (so every uvicorn worker process sees the
    same settings; flags win over variables already set) and validate the result."""
    for field, value in values.items():
        if value is not None and not (_is_list(_option_type(Settings.model_fields[field].annotation)) and not value):
            os.environ[env_name(field)] = _env_value(value)
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        raise ConfigError(flag_name(field), f"{err.get('msg')} (from {flag_name(field)} or {env_name(field)})") from None


# `--engine ray` and its flags (densekit/cli/serve_ray_cmd.py); not settings: they shape the deployment, not the service.
RAY_FLAGS: dict[str, tuple[Any, Any]] = {
    "engine": (str, typer.Option("local", "--engine", help="local: this process (uvicorn); ray: Ray Serve, one deployment per shard")),
    "address": (
        str | None,
        typer.Option(None, "--address", help="--engine ray: the cluster (HOST:PORT, ray://HOST:PORT, auto); default: a local one"),
    ),
    "shard_replicas": (
        int,
        typer.Option(1, "--shard-replicas", help="--engine ray: replicas of each shard (more than 1 needs --read-only)"),
    ),
    "encoder_replicas": (int, typer.Option(1, "--encoder-replicas", help="--engine ray: replicas of the encoder")),
    "reranker_replicas": (int, typer.Option(1, "--reranker-replicas", help="--engine ray: replicas of the reranker")),
    "autoscale": (
        str | None,
        typer.Option(None, "--autoscale", help="--engine ray: MIN:MAX replicas of the ingress, encoder, reranker (and read-only shards)"),
    ),
    "allow_partial": (
        bool,
        typer.Option(False, "--allow-partial", help="--engine ray: with a shard down, answer /search from the others, marked partial"),
    ),
    "call_timeout_s": (float, typer.Option(30.0, "--call-timeout-s", help="--engine ray: a deployment slower than this counts as down")),
    "replica_cpus": (
        float,
        typer.Option(1.0, "--replica-cpus", help="--engine ray: CPUs each encoder, reranker and shard replica reserves"),
    ),
    "replica_gpus": (float, typer.Option(0.0, "--replica-gpus", help="--engine ray: GPUs each encoder and reranker replica reserves")),
}


def check_servable_folder(folder: Path) -> None:
    """IndexCorruptError unless `folder` is an index folder or a sharded one (whose shards the
    single-process server loads together); creates nothing."""
    from densekit.index.live import check_index_folder
    from densekit.index.sharded_manifest import is_sharded, read_sharded_manifest

    if is_sharded(folder):
        read_sharded_manifest(folder)
    else:
        check_index_folder(folder)


def serve(log_level: str = "info", **flags: Any) -> None:
    """Serve /search, /embed, /rerank, /v1/* and /documents over an index folder.

    Every flag is also an environment variable DENSEKIT_<NAME>; flags win, then the
    environment, then a --config settings file. GET /info shows the limits in force."""
    import uvicorn

    from densekit.service.http_server import uvicorn_options
    from densekit.service.logging_setup import configure_logging

    ray_flags = {name: flags.pop(name) for name in RAY_FLAGS}
    settings_file = flags.pop("config")
    if settings_file is not None:
        _fill_from_file(flags, settings_file)
    if ray_flags["engine"] not in ("local", "ray"):
        raise ConfigError("engine", f"expected local or ray, got {ray_flags['engine']!r}")
    s = settings_from_flags(flags)  # validates every value before anything loads
    if ray_flags["engine"] == "ray":
        from densekit.cli.serve_ray_cmd import serve_on_ray

        configure_logging(log_level, json_lines=s.log_json)
        serve_on_ray(s, **{k: v for k, v in ray_flags.items() if k != "engine"})
        return
    if s.index_dir is not None:
        check_servable_folder(Path(s.index_dir))  # a mistyped path fails here, having created nothing
    # Tokenisers' thread pool would compete with the forward pass's threads for the same
    # cores (and spin while idle); requests are tokenised one batch at a time anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if s.workers > 1 and s.allow_updates and s.index_dir is not None:
        raise ConfigError("workers", "live document updates need one process (--workers 1); with several workers pass --read-only")
    configure_logging(log_level, json_lines=s.log_json)
    # Worker processes (--workers N) start fresh interpreters: they configure logging from this.
    os.environ["DENSEKIT_SERVE_LOG_LEVEL"] = log_level
    uvicorn.run(
        "densekit.service.app:create_app",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        log_level=log_level,
        log_config=None,  # keep the structured logging configured above
        access_log=False,  # densekit logs one line per request itself, with timings
        timeout_graceful_shutdown=int(s.graceful_shutdown_s) or None,
        # Slow clients: keep-alive, request-head deadline and size (the body's deadline is the app's).
        **uvicorn_options(s, in_process=s.workers == 1),
    )


def _fill_from_file(flags: dict[str, Any], path: Path) -> None:
    """A settings file's values for the settings neither a flag nor the environment sets."""
    from densekit.settings_file import read_settings_file

    for field, value in read_settings_file(path).items():
        if flags.get(field) is None and env_name(field) not in os.environ:
            flags[field] = value


CONFIG_OPTION = typer.Option(
    None,
    "--config",
    help="a settings file (YAML of setting names, e.g. the serve.yaml of a `densekit pipeline run` folder); "
    "relative paths in it are read from its folder; flags and DENSEKIT_* variables win over it",
    show_default=False,
)


def _signature() -> tuple[inspect.Signature, dict[str, Any]]:
    params = []
    annotations: dict[str, Any] = {}
    for field, info in Settings.model_fields.items():
        tp, option = _option(field, info)
        params.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
        annotations[field] = tp
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=CONFIG_OPTION, annotation=Path | None))
    annotations["config"] = Path | None
    level = typer.Option("info", "--log-level", help="debug, info, warning, error")
    params.append(inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default=level, annotation=str))
    annotations["log_level"] = str
    for name, (tp, option) in RAY_FLAGS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
        annotations[name] = tp
    annotations["return"] = None
    return inspect.Signature(params), annotations


# typer reads a command's parameters from its signature and type hints: give it the generated ones.
serve.__signature__, serve.__annotations__ = _signature()  # type: ignore[attr-defined]
