"""The ``framefold`` command line.

Exit codes: 0 every item done or skipped, 1 some item failed, 2 bad input
(manifest, arguments, unreadable video) — reported before any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: finished outputs are kept; run again to resume")
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framefold", description="Batch video generation from job manifests.")
    p.add_argument("--version", action="version", version=f"framefold {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a manifest: generate, stitch, upscale, encode, record provenance")
    r.add_argument("manifest", type=Path)
    r.add_argument("--out", type=Path, help="output root (default: the manifest's `output`)")
    r.add_argument("--force", action="store_true", help="regenerate items even when their output is current")
    r.add_argument("--only", nargs="+", metavar="ID", help="run only these item ids")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")
    r.add_argument("-v", "--verbose", action="store_true", help="show Prefect and Ray logs")
    r.set_defaults(func=_run)

    v = sub.add_parser("validate", help="check a manifest without running it")
    v.add_argument("manifest", type=Path)
    v.set_defaults(func=_validate)

    pl = sub.add_parser("plan", help="show items, windows, frames to generate and redundancy")
    pl.add_argument("manifest", type=Path)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_plan)

    i = sub.add_parser("inspect", help="print the provenance embedded in a video")
    i.add_argument("video", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_inspect)

    s = sub.add_parser("schema", help="print the manifest JSON Schema")
    s.set_defaults(func=_schema)
    return p


def _load(path: Path, out_dir: Path | None = None):
    from manifests import ManifestError, load_manifest

    try:
        return load_manifest(path, output=out_dir)
    except ManifestError as e:
        err.print(f"[bold red]invalid manifest[/] ({len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}):")
        err.print(str(e), markup=False)
        return None


def _validate(args) -> int:
    job = _load(args.manifest)
    if job is None:
        return EXIT_BAD_INPUT
    out.print(f"{job.manifest_path}: valid — job {job.name!r}, {len(job.items)} item(s), output {job.output}")
    return EXIT_OK


def _plan(args) -> int:
    job = _load(args.manifest)
    if job is None:
        return EXIT_BAD_INPUT
    from tasks.plan import plan_item

    rows = []
    for item in job.items:
        plan = plan_item(item)
        generated = sum(w.length for w in plan.windows)
        rows.append({
            "id": item.id, "frames": item.frames, "fps": item.fps, "loop": item.loop,
            "size": list(item.size), "output_size": list(item.output_size),
            "windows": len(plan.windows), "window": item.window.length, "overlap": item.window.overlap,
            "frames_generated": generated, "redundancy": round(plan.redundancy, 3),
        })
    totals = {
        "items": len(rows),
        "frames": sum(r["frames"] for r in rows),
        "windows": sum(r["windows"] for r in rows),
        "frames_generated": sum(r["frames_generated"] for r in rows),
    }
    totals["redundancy"] = round(totals["frames_generated"] / max(1, totals["frames"]), 3)
    if args.json:
        print(json.dumps({"job": job.name, "output": str(job.output), "items": rows, "totals": totals}, indent=2))
        return EXIT_OK
    table = Table(title=f"plan: {job.name}")
    for col in ("item", "frames", "windows", "W/O", "generated", "redundancy", "size → output"):
        table.add_column(col, justify="right" if col not in ("item", "size → output") else "left")
    for r in rows:
        table.add_row(r["id"], str(r["frames"]), str(r["windows"]), f"{r['window']}/{r['overlap']}",
                      str(r["frames_generated"]), f"{r['redundancy']:.2f}",
                      f"{r['size'][0]}×{r['size'][1]} → {r['output_size'][0]}×{r['output_size'][1]}")
    out.print(table)
    out.print(f"{totals['items']} item(s), {totals['frames']} frames delivered, {totals['windows']} windows, "
              f"{totals['frames_generated']} frames generated (redundancy {totals['redundancy']:.2f})")
    return EXIT_OK


def _run(args) -> int:
    # Quiet, offline defaults for Prefect; a configured PREFECT_* still wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # a temporary local Prefect server can take over 20 s to start on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not args.verbose:  # the summary table reports every failure; -v shows the logs
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    job = _load(args.manifest, args.out)
    if job is None:
        return EXIT_BAD_INPUT
    if args.only:
        unknown = sorted(set(args.only) - {i.id for i in job.items})
        if unknown:
            err.print(f"[bold red]error[/]: --only: no item with id {', '.join(map(repr, unknown))} in {job.manifest_path}")
            return EXIT_BAD_INPUT
    from flows.progress import RichReporter, install
    from flows.run import run_job

    total = len(args.only) if args.only else len(job.items)
    err.print(f"framefold: running {job.name!r} ({total} item(s)) → {job.output}")
    with RichReporter(total) as rep:
        install(rep)
        try:
            summary = run_job(job, force=args.force, only=args.only)
        finally:
            install(None)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return EXIT_FAILED if summary["counts"]["failed"] else EXIT_OK


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['job']} — run {summary['run_id']}")
    for col in ("item", "status", "reason", "seconds", "output"):
        table.add_column(col, overflow="fold")
    style = {"done": "green", "skipped": "cyan", "failed": "red"}
    for r in summary["items"]:
        table.add_row(r["id"], f"[{style[r['status']]}]{r['status']}[/]", r["reason"],
                      f"{r['seconds']:.1f}", ", ".join(r["outputs"]))
    out.print(table)
    c = summary["counts"]
    out.print(f"done {c['done']}, skipped {c['skipped']}, failed {c['failed']} in {summary['seconds']:.1f} s → {summary['output']}")


def _inspect(args) -> int:
    from tasks.encode import TAG, read_tags
    from tasks.errors import EncodeError

    if not args.video.is_file():
        err.print(f"[bold red]error[/]: {args.video}: no such file")
        return EXIT_BAD_INPUT
    try:
        tags = read_tags(args.video)
    except EncodeError as e:
        err.print(f"[bold red]error[/]: {args.video}: not a readable video ({e})")
        return EXIT_BAD_INPUT
    if TAG not in tags:
        err.print(f"[bold red]error[/]: {args.video}: no framefold provenance in this file")
        return EXIT_BAD_INPUT
    try:
        record = json.loads(tags[TAG])
    except ValueError:
        err.print(f"[bold red]error[/]: {args.video}: the framefold tag is not valid JSON (file damaged?)")
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return EXIT_OK
    v = record.get("video", {})
    out.print(f"[bold]{args.video}[/]")
    for label, value in (
        ("item", record.get("item", {}).get("id")),
        ("job", record.get("job")),
        ("run", record.get("run_id")),
        ("backend", record.get("backend")),
        ("source type", record.get("digital_source_type")),
        ("video", f"{v.get('width')}×{v.get('height')}, {v.get('frames')} frames @ {v.get('fps')} fps"),
        ("seed", record.get("seed")),
        ("content key", record.get("content_key")),
        ("made", record.get("finished_at")),
        ("framefold", record.get("framefold_version")),
    ):
        out.print(f"  {label:12} {value}")
    return EXIT_OK


def _schema(args) -> int:
    from manifests import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return EXIT_OK


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("framefold")
    except metadata.PackageNotFoundError:
        return "0+unknown"


if __name__ == "__main__":
    sys.exit(main())
