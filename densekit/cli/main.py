"""The `densekit` command: one CLI over data, training, indexing, serving and evaluation."""

from __future__ import annotations

import logging
import sys

import typer

from densekit import __version__
from densekit.cli import bench_cmd, data_cmd, encode_cmd, eval_cmd, export_cmd, index_cmd, pipeline_cmd, serve_cmd, train_cmd, tune_cmd
from densekit.cli.common import console
from densekit.errors import DensekitError

app = typer.Typer(
    name="densekit",
    help="Dense retrieval and reranking: train, index, serve and evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(index_cmd.app, name="index")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(train_cmd.app, name="train")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(tune_cmd.app, name="tune")
app.add_typer(pipeline_cmd.app, name="pipeline")
app.command("serve")(serve_cmd.serve)
app.command("export")(export_cmd.export)
app.command("encode")(encode_cmd.encode)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log at INFO level"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point: typed library errors become one-line messages and exit code 2."""
    try:
        app(standalone_mode=True)
    except DensekitError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
