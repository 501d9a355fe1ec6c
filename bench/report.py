"""The readable table printed at the end, and the machine description saved with the results."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from typing import Any

import PIL
import psutil

from bench.contenders import DESCRIPTIONS, FLOOR, NAIVE, PIXELMILL, PIXELMILL_RERUN
from bench.inputs import REPO


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def machine() -> dict[str, object]:
    """Where and on what code the numbers were taken."""
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        # Uncommitted changes under src/ are measured too (the package is installed editable).
        "src_modified": bool(_git("status", "--porcelain", "--", "src")),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
    }


def _fmt(value: Any, suffix: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def render(results: dict[str, Any]) -> str:
    """The whole result as plain-text tables."""
    lines: list[str] = []
    m = results["machine"]
    lines.append(
        f"pixelmill bench — {m['date']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        f"Python {m['python']}, Pillow {m['pillow']}, commit {m['commit']}"
        + (" + uncommitted changes in src/" if m["src_modified"] else "")
    )
    speed = results.get("speed")
    if speed:
        lines += ["", _speed_table(speed)]
    memory = results.get("memory")
    if memory:
        lines += ["", _memory_table(memory)]
    api = results.get("api")
    if api:
        lines += ["", _api_table(api)]
    idle = results.get("idle")
    if idle:
        lines += ["", _idle_table(idle)]
    return "\n".join(lines)


def _speed_table(speed: dict[str, Any]) -> str:
    contenders = speed["contenders"]
    header = (
        f"Speed: {speed['files']} corpus photos, {speed['workers']} workers, "
        f"{speed['rounds']} rounds (alternating, medians)"
    )
    rows = [
        header,
        f"  {'contender':<16} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5} "
        f"{'quiet':>6} {'quiet s':>8} {'cpu s':>6} {'noise':>6}",
    ]
    for name in (NAIVE, FLOOR, PIXELMILL, PIXELMILL_RERUN):
        c = contenders.get(name)
        if c is None:
            continue
        rows.append(
            f"  {name:<16} {_fmt(c['median_s']):>9} {_fmt(c['min_s']):>7} "
            f"{_fmt(c['max_s']):>7} {c['runs']:>5} {c['clean_runs']:>6} "
            f"{_fmt(c['clean_median_s']):>8} {_fmt(c['median_cpu_s'], digits=1):>6} "
            f"{_fmt(c['median_others_cores'], digits=2):>6}"
        )
    rows += [
        f"  quiet: runs during which other work used < {speed['noise_limit_cores']} core;"
        " quiet s: their median (- when there is none)",
        "  cpu s: user+system seconds of the contender's process tree; noise: cores kept busy"
        " by other work during the run (medians)",
    ]
    r = speed["ratios"]
    rows.append(
        f"  naive / floor: {_fmt(r['naive_over_floor'], 'x')} "
        f"(quiet runs {_fmt(r['clean_naive_over_floor'], 'x')})"
    )
    if r.get("speedup_vs_naive") is not None:
        h = speed["headline"]
        rows.append(
            f"  pixelmill speed-up vs naive baseline: {_fmt(h['speedup_vs_naive'], 'x')} "
            f"on {h['basis']} (all runs {_fmt(r['speedup_vs_naive'], 'x')}, per round "
            f"{_fmt(r['speedup_vs_naive_paired'], 'x')}); target >= 2x: "
            f"{_verdict(h['meets_vs_naive'])}, aim 2.5x: {_verdict(h['meets_vs_naive_aim'])}"
        )
        rows.append(
            f"  pixelmill time vs floor baseline: {_fmt(h['time_vs_floor'], 'x')} "
            f"on {h['basis']} (all runs {_fmt(r['time_vs_floor'], 'x')}, per round "
            f"{_fmt(r['time_vs_floor_paired'], 'x')}); target <= 1.10x: "
            f"{_verdict(h['meets_vs_floor'])}"
        )
        if h["basis"] != "quiet runs":
            rows.append(
                "  ! some contender had no quiet run: verdicts rest on noisy runs; run again"
                " when the machine is calmer, or with more --rounds"
            )
        rows.append(f"  pixelmill CPU time vs floor baseline: {_fmt(r['cpu_vs_floor'], 'x')}")
        rows.append(f"  re-run (all duplicate) time vs fresh run: {_fmt(r['rerun_time_vs_fresh'])}")
        rows += _startup_rows(speed)
        for name in (PIXELMILL, PIXELMILL_RERUN):
            report = contenders[name]["last_report"]
            if report:
                rows.append(
                    f"  {name} report: done {report['done']}, duplicate {report['duplicate']}, "
                    f"failed {report['failed']} of {report['total']}"
                )
    rows += [f"  {name}: {DESCRIPTIONS[name]}" for name in contenders]
    for name, c in contenders.items():
        if c["invalid_runs"]:
            rows.append(
                f"  ! {name}: {c['invalid_runs']} run(s) failed or incomplete, left out of"
                " the medians"
            )
        for error in c["errors"][:2]:
            rows.append(f"  ! {name}: {error}")
    return "\n".join(rows)


# Issue 10's start-up aims: one tiny image within 0.1 s of the floor, ten small photos at
# most 1.08x its time.
STARTUP_EXTRA_AIM_S = 0.1
SMALL_SET_RATIO_AIM = 1.08


def _startup_rows(speed: dict[str, Any]) -> list[str]:
    """The fixed cost of a run: one tiny image, then ten small photos, against the floor."""
    rows = []
    tiny = speed.get("startup")
    if tiny:
        rows.append(
            f"  start-up, one tiny image ({tiny['source']}, {tiny['rounds']} rounds): pixelmill "
            f"{tiny['pixelmill_median_s']:.3f}s, floor {tiny['floor_median_s']:.3f}s: "
            f"{tiny['extra_s']:+.3f}s, {_fmt(tiny.get('time_vs_floor'), 'x', 3)} "
            f"(aim <= +{STARTUP_EXTRA_AIM_S:.1f}s: "
            f"{_verdict(tiny['extra_s'] <= STARTUP_EXTRA_AIM_S)})"
        )
    small = speed.get("startup_small_set")
    if small:
        ratio = small["time_vs_floor"]
        rows.append(
            f"  start-up, {small['label']} ({small['rounds']} rounds): pixelmill "
            f"{small['pixelmill_median_s']:.3f}s, floor {small['floor_median_s']:.3f}s: "
            f"{small['extra_s']:+.3f}s, {ratio:.3f}x (aim <= {SMALL_SET_RATIO_AIM}x: "
            f"{_verdict(ratio <= SMALL_SET_RATIO_AIM)}); cpu s "
            f"{small['pixelmill_median_cpu_s']:.2f} vs {small['floor_median_cpu_s']:.2f}"
        )
    if tiny or small:
        rows.append("  (start-up runs: medians, alternating, byte-code cached for both)")
    return rows


def _memory_table(memory: list[dict[str, Any]]) -> str:
    rows = [
        "Memory: peak RSS of the process tree (sampled every 20 ms), 2 workers",
        f"  {'scenario':<13} {'contender':<10} {'peak MiB':>9} {'s':>7}  target",
    ]
    for row in memory:
        target = row["target"]
        verdict = f"{target}: {_verdict(row['meets_target'])}" if target else "(context)"
        rows.append(
            f"  {row['scenario']:<13} {row['contender']:<10} {row['peak_rss_mib']:>9.0f} "
            f"{row['seconds']:>7.1f}  {verdict}"
        )
        report = row.get("report")
        if report and (report["failed"] or row["returncode"]):
            rows.append(f"    ! exit {row['returncode']}, failures: {report['failures']}")
    return "\n".join(rows)


def _api_table(api: dict[str, Any]) -> str:
    if api.get("skipped"):
        return f"API: skipped — {api['skipped']}"
    rows = ["API (pixelmill serve, 127.0.0.1)"]
    batch = api.get("batch")
    if batch:
        rows += [
            f"  one batch of {batch['files']} photos, {batch['rounds']} rounds alternating with "
            f"the CLI: API median {batch['api_median_s']:.2f}s, CLI median "
            f"{batch['cli_median_s']:.2f}s",
            *(
                []
                if batch.get("all_batches_completed", True)
                else ["  ! a batch did not complete every image: see final_status in the JSON"]
            ),
            f"  API throughput vs CLI: {batch['api_throughput_vs_cli']:.2f}x (target >= 0.9: "
            f"{_verdict(batch['meets_throughput_target'])})",
            f"  GET /v1/batches/{{id}} while busy: p50 {_fmt(batch['status_p50_ms'], ' ms')}, "
            f"p99 {_fmt(batch['status_p99_ms'], ' ms')} over {batch['status_polls']} polls "
            f"(target p99 < 20 ms: {_verdict(batch['meets_latency_target'])})",
        ]
    upload = api.get("upload")
    if upload:
        rows.append(
            f"  receiving {upload['files']} files ({upload['upload_mib']} MiB) in one batch: "
            f"server tree peak {upload['peak_rss_receiving_mib']:.0f} MiB "
            f"(idle {upload['idle_rss_mib']:.0f} MiB), upload {upload['upload_s']:.1f}s"
        )
    for error in api.get("errors", []):
        rows.append(f"  ! {error}")
    return "\n".join(rows)


def _idle_table(idle: dict[str, Any]) -> str:
    """One 12-MP photo on an idle service, 2 workers against 1, and where the time goes."""
    if idle.get("skipped"):
        return f"Idle: skipped — {idle['skipped']}"
    one, two = idle["one_worker"], idle["two_workers"]
    nbytes = idle["source"].get("bytes")
    size = "-" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"
    rows = [
        f"Idle service, one image at a time: POST /v1/images?wait=true of a {idle['photo']} "
        f"({size}), {idle['rounds']} rounds alternating, medians",
        f"  {'workers':<8} {'median s':>9} {'min s':>7} {'max s':>7} {'quiet':>6} "
        f"{'quiet s':>8} {'cores':>6} {'noise':>6}",
    ]
    for label, side in (("1", one), ("2", two)):
        rows.append(
            f"  {label:<8} {side['median_s']:>9.3f} {min(side['seconds']):>7.3f} "
            f"{max(side['seconds']):>7.3f} {side['quiet_requests']:>6} "
            f"{_fmt(side['quiet_median_s'], digits=3):>8} {side['median_cores_used']:>6.2f} "
            f"{_fmt(sorted(side['others_cores'])[len(side['others_cores']) // 2]):>6}"
        )
    rows += [
        "  cores: server CPU seconds per second of answer time; noise: cores other work kept"
        " busy meanwhile",
        f"  2 workers / 1 worker: {idle['ratio']:.3f}x on {idle['basis']} (all requests "
        f"{idle['ratio_all_requests']:.3f}x, per round {idle['ratio_paired']:.3f}x); "
        f"aim {idle['ratio_aim']}: {_verdict(idle['meets_aim'])}",
    ]
    if idle["basis"] != "quiet requests":
        rows.append("  ! fewer than half the requests were quiet: the verdict rests on noisy ones")
    for label, side in (("1 worker", one), ("2 workers", two)):
        ms = {k: _fmt(v, digits=0) for k, v in side["stages_median_ms"].items()}
        outside = _fmt(side["outside_render_median_ms"], digits=0)
        rows.append(
            f"  {label} render ({side['renditions']} renditions), ms: read {ms['read']} + decode "
            f"{ms['decode']} + resize {ms['resize']} + encode {ms['encode']} = {ms['total']}; "
            f"outside the render (upload, queue, answer) {outside}"
        )
    if idle.get("ratio_if_split_evenly") is not None:
        rows.append(
            f"  were resize + encode split evenly over 2 cores (decode not split): about "
            f"{idle['ratio_if_split_evenly']:.2f}x"
        )
    return "\n".join(rows)
