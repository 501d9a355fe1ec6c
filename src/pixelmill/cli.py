"""``pixelmill run``, ``serve`` and ``worker``: the command-line composition root.

A command imports what it needs when it runs: ``run`` (``pixelmill.run_command``) never
loads the settings model, the HTTP stack or the progress bar it does not show.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pixelmill.run_command import (
    EXIT_OK,
    EXIT_USAGE,
    MAX_PROCESSES,
    MIN_PROCESSES,
    Layout,
    UsageError,
    check_processes,
    run_images,
)

if TYPE_CHECKING:
    from pixelmill.config import Settings

app = typer.Typer(
    help="Turn images into every rendition a product needs, on all cores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is literal: Rich markup would eat "[w, h]" and "[default: ...]".
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    """``--version``: the installed distribution's version, so it never drifts from a release."""
    if value:
        from importlib import metadata

        typer.echo(f"pixelmill {metadata.version('pixelmill')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Turn images into every rendition a product needs, on all cores."""


def _usage_error(console: Console, message: str) -> typer.Exit:
    console.print(f"error: {message}", style="red", markup=False)  # paths may hold [tags]
    return typer.Exit(EXIT_USAGE)


@app.command(short_help="Render images and folders into OUT.")
def run(
    sources: Annotated[
        list[str], typer.Argument(help="Image files or folders (recursive).", metavar="SOURCES")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder.")],
    workers: Annotated[
        int | None,
        typer.Option(
            help=f"Worker processes, {MIN_PROCESSES}-{MAX_PROCESSES} [default: CPU count]."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    presets: Annotated[
        Path | None,
        typer.Option(
            help='JSON {"name": [w, h]} or {"name": {"width", "height", "fit", "gravity", '
            '"formats", "quality"}} (docs/presets.md).'
        ),
    ] = None,
    formats: Annotated[str | None, typer.Option(help="e.g. jpeg,webp,avif,png.")] = None,
    quality: Annotated[
        str | None,
        typer.Option(
            help="Encoder quality 1-100 per lossy format, e.g. jpeg=80,webp=75 "
            "[default: jpeg=85,webp=80,avif=60]."
        ),
    ] = None,
    layout: Annotated[
        Layout,
        typer.Option(
            help="Under OUT, content: renditions/<sha256[:2]>/<sha256>/<preset>.<ext> "
            "(each content once); mirror: <path from SRC, no extension>/<preset>.<ext>.",
        ),
    ] = Layout.CONTENT,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Render every image under SOURCES into OUT; exit 1 if any image failed.

    Files in folders that are not images (by their first bytes) are skipped. Exit codes: 0
    nothing failed, 1 some image failed, 2 usage error, 130 interrupted.
    """
    code = run_images(sources, out, workers, report, presets, formats, quality, layout, no_progress)
    raise typer.Exit(code)


@app.command(short_help="Start the HTTP service.")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Renditions, spool and store file (overrides PIXELMILL_DATA_DIR) "
            "[default: ./pixelmill-data]."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help=f"Render processes of the local engine, {MIN_PROCESSES}-{MAX_PROCESSES} "
            "(overrides PIXELMILL_WORKERS) [default: CPU count]."
        ),
    ] = None,
) -> None:
    """Start the HTTP service (settings from PIXELMILL_* environment variables)."""
    from pixelmill.config import ConfigError, load_settings

    console = Console(stderr=True, soft_wrap=True)
    _check_processes(console, "--workers", workers)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _usage_error(console, str(exc)) from None
    overrides: dict[str, Any] = {"data_dir": data_dir, "workers": workers}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    _check_parts(console, settings, check_broker=True)
    import uvicorn

    from pixelmill.api.app import create_app, uvicorn_config

    config = uvicorn_config(create_app(settings), settings, host, port)  # sets up its logging
    logging.getLogger("uvicorn.error").info("%s", describe_deployment(settings))
    logging.getLogger("uvicorn.error").info("%s", describe_pages(host, port))
    uvicorn.Server(config).run()


def describe_deployment(settings: Settings) -> str:
    """The start line of ``serve``: where the data lives and what renders it, so a wrong
    environment variable shows at a glance (the store URL without its password)."""
    from pixelmill.preflight import redact_url

    if settings.engine == "celery":
        rendering = f"engine celery (queue {settings.celery_queue}, workers run apart)"
    else:
        plural = "" if settings.workers == 1 else "s"
        rendering = f"engine local, {settings.workers} worker{plural}"
    return (
        f"data dir {settings.data_dir.resolve()}, store {redact_url(settings.store)}, {rendering}"
    )


def describe_pages(host: str, port: int) -> str:
    """Where a person points a browser: the dashboard and the API's interactive docs."""
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return f"dashboard at {base}/, API docs at {base}/docs"


@app.command(short_help="Run a render worker of the celery engine.")
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            help=f"Render processes, {MIN_PROCESSES}-{MAX_PROCESSES} [default: CPU count]."
        ),
    ] = None,
) -> None:
    """Run a render worker of the celery engine (settings from PIXELMILL_* variables)."""
    from pixelmill.config import ConfigError, load_settings

    console = Console(stderr=True, soft_wrap=True)
    _check_processes(console, "--concurrency", concurrency)
    try:
        settings = load_settings()
        if settings.engine != "celery":
            raise ConfigError("pixelmill worker needs PIXELMILL_ENGINE=celery")
    except ConfigError as exc:
        raise _usage_error(console, str(exc)) from None
    # The broker is checked by the worker itself: one that is not up yet is waited for.
    _check_parts(console, settings, check_broker=False)
    try:
        from pixelmill.engine.celery_worker import run_worker
    except ImportError as exc:
        from pixelmill.preflight import celery_missing

        raise _usage_error(console, celery_missing(exc)) from None

    raise typer.Exit(run_worker(settings, concurrency or os.cpu_count() or 1))


def _check_processes(console: Console, option: str, value: int | None) -> None:
    """A process count out of range: one line and exit 2 (not typer's boxed message)."""
    try:
        check_processes(option, value)
    except UsageError as exc:
        raise _usage_error(console, str(exc)) from None


def _check_parts(console: Console, settings: Settings, *, check_broker: bool) -> None:
    """The storage, the store and (``check_broker``) the broker answer, and the local
    engine's workers can start: else one line and exit 3 (2 for a login they refuse or a
    TMPDIR to change), before any work is taken (see pixelmill.preflight)."""
    from pixelmill import preflight

    try:
        preflight.check_storage(settings)
        preflight.check_store(settings)
        if check_broker:
            preflight.check_broker(settings)
        preflight.check_workers(settings)
    except preflight.CannotStart as exc:
        console.print(f"error: {exc.message}", style="red", markup=False)
        raise typer.Exit(exc.exit_code) from None


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
