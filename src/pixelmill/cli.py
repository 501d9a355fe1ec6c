"""``pixelmill run`` and ``pixelmill serve``: the command-line composition root.

A command imports what it needs when it runs: ``run`` never loads the settings model
(pydantic), the HTTP stack or the progress bar it does not show, as every import is paid
on each run (tests/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console

from pixelmill.core.specs import RenderSpec, parse_quality
from pixelmill.engine.base import ImageOutcome
from pixelmill.mirror import MirrorClash, MirrorLayout, mirror_folders
from pixelmill.render_settings import load_render_settings
from pixelmill.run_recorder import RunRecorder
from pixelmill.runner import EngineOptions, iter_files, render_paths

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pixelmill.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + signal.SIGTERM
MIN_PROCESSES, MAX_PROCESSES = 1, 256


class Layout(StrEnum):
    CONTENT = "content"
    MIRROR = "mirror"


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: stopped as on Ctrl-C (pending images cancelled, temp files
    removed, the summary and report written), not killed half way."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


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
    console = Console(stderr=True, soft_wrap=True)  # a log line stays one line
    _check_processes(console, "--workers", workers)
    try:
        # The env's presets file is checked only when --presets does not replace it.
        settings = load_render_settings()
        spec = settings.render_spec(presets, formats)
        if quality is not None:
            spec = spec.with_quality(parse_quality(quality))
    except ValueError as exc:
        raise _usage_error(console, str(exc)) from None
    missing = [s for s in sources if not os.path.exists(s)]
    if missing:
        raise _usage_error(console, f"no such file or folder: {', '.join(missing)}")
    try:
        folders = mirror_folders(sources, out) if layout is Layout.MIRROR else None
    except MirrorClash as exc:
        raise _usage_error(console, str(exc)) from None
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _usage_error(console, f"cannot use {out} as the output folder: {exc}") from None
    if report is not None:
        try:
            report.parent.mkdir(parents=True, exist_ok=True)
            if report.is_dir():
                raise IsADirectoryError(f"{report} is a folder")
        except OSError as exc:
            raise _usage_error(console, f"cannot write the report to {report}: {exc}") from None
    mirror = MirrorLayout(out, sources, folders) if folders is not None else None
    options = EngineOptions(
        workers=workers or settings.workers,
        memory_budget_bytes=settings.memory_budget_mb * 1024 * 1024,
        max_tasks_per_child=settings.max_tasks_per_child,
    )
    recorder = RunRecorder(
        out, keep_entries=report is not None, folder_of=mirror.folder_of if mirror else None
    )
    started = time.monotonic()
    try:
        code = _run_with_progress(
            sources, out, spec, options, recorder, console, not no_progress, mirror
        )
    finally:
        if mirror is not None:
            mirror.close()
    elapsed = time.monotonic() - started
    _print_summary(console, recorder, elapsed)
    if report is not None:
        report.write_text(json.dumps(recorder.report(elapsed), indent=2))
    if code == EXIT_OK and recorder.statuses["failed"]:
        code = EXIT_FAILED
    raise typer.Exit(code)


def _run_with_progress(
    sources: list[str],
    out: str,
    spec: RenderSpec,
    options: EngineOptions,
    recorder: RunRecorder,
    console: Console,
    show_progress: bool,
    mirror: MirrorLayout | None = None,
) -> int:
    progress: Progress | _NoProgress = _NoProgress()
    total: int | None = None
    if show_progress and console.is_terminal:
        progress = _progress_bar(console)
        total = sum(1 for _ in iter_files(sources, skip=out))  # the bar's default is 100
    task = progress.add_task("images", total=total, rate="")
    started = time.monotonic()

    def on_outcome(outcome: ImageOutcome) -> None:
        recorder.record(mirror.place(outcome) if mirror is not None else outcome)
        rate = recorder.total / max(time.monotonic() - started, 1e-6)
        progress.update(task, advance=1, rate=f"{rate:.1f} img/s")

    def on_skipped(index: int, path: str) -> None:
        recorder.record_skipped(index, path)
        progress.update(task, advance=1)

    with progress:
        try:
            signal.signal(signal.SIGTERM, _raise_terminated)
            render_paths(
                sources,
                mirror.work_dir if mirror is not None else out,
                on_outcome,
                spec=spec,
                options=options,
                on_skipped=on_skipped,
                skip=out,
            )
        except KeyboardInterrupt as exc:
            # Cleaned up and every image counted: another Ctrl-C must not cost the summary,
            # the report and the exit code.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            progress.stop()
            console.print("[yellow]interrupted: pending images cancelled[/yellow]")
            return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # rendering is over: nothing to clean up
    return EXIT_OK


class _NoProgress:
    """Stands in for the progress bar when none is shown (Rich's would be imported and
    the sources walked once more, for nothing)."""

    def add_task(self, description: str, **fields: Any) -> TaskID:
        return cast("TaskID", 0)

    def update(self, task: TaskID, **changes: Any) -> None:
        pass

    def stop(self) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]rendering"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def _print_summary(console: Console, recorder: RunRecorder, elapsed: float) -> None:
    summary = recorder.summary(elapsed)
    rate = summary["total"] / elapsed if elapsed > 0 else 0.0
    console.print(
        f"[bold]{summary['total']} images[/bold] in {elapsed:.2f} s ({rate:.1f} images/s): "
        f"[green]{summary['done']} done[/green], {summary['duplicate']} duplicate, "
        f"[red]{summary['failed']} failed[/red], {summary['cancelled']} cancelled, "
        f"{summary['skipped']} skipped"
    )
    for code, count in sorted(recorder.failures.items()):
        console.print(f"  failed {code}: {count}")
    if recorder.rendered:
        stages = ", ".join(
            f"{stage} {recorder.stage_ms[stage] / recorder.rendered:.0f} ms"
            for stage in ("read", "decode", "resize", "encode")
        )
        console.print(f"  mean per rendered image: {stages}")


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
    if value is not None and not MIN_PROCESSES <= value <= MAX_PROCESSES:
        raise _usage_error(
            console, f"{option} must be {MIN_PROCESSES}-{MAX_PROCESSES}, not {value}"
        )


def _check_parts(console: Console, settings: Settings, *, check_broker: bool) -> None:
    """The storage, the store and (``check_broker``) the broker answer: else one line and
    exit 3 (2 for a login they refuse), before any work is taken (see pixelmill.preflight)."""
    from pixelmill import preflight

    try:
        preflight.check_storage(settings)
        preflight.check_store(settings)
        if check_broker:
            preflight.check_broker(settings)
    except preflight.CannotStart as exc:
        console.print(f"error: {exc.message}", style="red", markup=False)
        raise typer.Exit(exc.exit_code) from None


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
