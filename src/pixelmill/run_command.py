"""``pixelmill run``: render files and folders into a folder, with a summary and a report.

The command's work, apart from its command line: ``pixelmill.cli`` parses it with Typer,
``pixelmill.run_args`` parses the common cases without (see there why); both call
``run_images``. It imports what a run needs and no more, as every import is paid on each
run: no settings model (pydantic-settings), no HTTP stack, no progress bar it does not
show (tests/test_cli_startup.py keeps it so).
"""

from __future__ import annotations

import json
import os
import signal
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console

from pixelmill.core.specs import RenderSpec, parse_quality
from pixelmill.engine.base import ImageOutcome
from pixelmill.engine.forkserver import NoSocketFolder, worker_context
from pixelmill.mirror import MirrorClash, MirrorLayout, mirror_folders
from pixelmill.render_settings import load_render_settings
from pixelmill.run_recorder import RunRecorder
from pixelmill.runner import EngineOptions, iter_files, render_paths

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + signal.SIGTERM
MIN_PROCESSES, MAX_PROCESSES = 1, 256


class Layout(StrEnum):
    CONTENT = "content"
    MIRROR = "mirror"


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: stopped as on Ctrl-C (pending images cancelled, temp files
    removed, the summary and report written), not killed half way."""


class UsageError(ValueError):
    """A command line that cannot run: one line for the user, exit 2."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def usage_error(console: Console, message: str) -> int:
    """Say what is wrong in one line; the exit code of a usage error."""
    console.print(f"error: {message}", style="red", markup=False)  # paths may hold [tags]
    return EXIT_USAGE


def check_processes(option: str, value: int | None) -> None:
    """UsageError for a process count out of range."""
    if value is not None and not MIN_PROCESSES <= value <= MAX_PROCESSES:
        raise UsageError(f"{option} must be {MIN_PROCESSES}-{MAX_PROCESSES}, not {value}")


def run_images(
    sources: list[str],
    out: str,
    workers: int | None = None,
    report: Path | None = None,
    presets: Path | None = None,
    formats: str | None = None,
    quality: str | None = None,
    layout: Layout = Layout.CONTENT,
    no_progress: bool = False,
) -> int:
    """Render every image under ``sources`` into ``out``; the exit code (see ``cli.run``)."""
    console = Console(stderr=True, soft_wrap=True)  # a log line stays one line
    try:
        check_processes("--workers", workers)
    except UsageError as exc:
        return usage_error(console, str(exc))
    try:
        # The env's presets file is checked only when --presets does not replace it.
        settings = load_render_settings()
        spec = settings.render_spec(presets, formats)
        if quality is not None:
            spec = spec.with_quality(parse_quality(quality))
    except ValueError as exc:
        return usage_error(console, str(exc))
    missing = [s for s in sources if not os.path.exists(s)]
    if missing:
        return usage_error(console, f"no such file or folder: {', '.join(missing)}")
    try:
        folders = mirror_folders(sources, out) if layout is Layout.MIRROR else None
    except MirrorClash as exc:
        return usage_error(console, str(exc))
    try:
        worker_context()  # a fork server with nowhere for its socket: no worker would start
    except NoSocketFolder as exc:
        return usage_error(console, str(exc))
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return usage_error(console, f"cannot use {out} as the output folder: {exc}")
    if report is not None:
        try:
            report.parent.mkdir(parents=True, exist_ok=True)
            if report.is_dir():
                raise IsADirectoryError(f"{report} is a folder")
        except OSError as exc:
            return usage_error(console, f"cannot write the report to {report}: {exc}")
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
    return code


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
