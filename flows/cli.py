"""The ``framefold`` command line.

Exit codes: 0 every item done or skipped, 1 some item failed (or Ray or a store did not
answer), 2 bad input (manifest, arguments, unreadable video) — reported before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from rich import box
from rich.table import Table

from flows.console import err, error, out, say, text
from tasks.malloc import return_large_buffers

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

def main(argv: list[str] | None = None) -> int:
    return_large_buffers()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    if args.command in ("run", "submit"):
        _settle_only(args, parser)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        say(err, ("interrupted", "red"), ": finished outputs are kept; run again to resume")
        return 130


def _settle_only(args, parser: argparse.ArgumentParser) -> None:
    """Options anywhere on the line: in ``run --only cup tiny.yaml`` the manifest is the last word
    --only took (nothing else can be, since MANIFEST is not given elsewhere); ids may be ``a,b``."""
    if args.manifest is None:
        if not args.only or len(args.only) < 2:
            parser.error(f"{args.command}: the following arguments are required: MANIFEST")
        args.manifest = args.only.pop()
    if args.only:
        args.only = [part for value in args.only for part in value.split(",") if part]


def _quiet_third_parties() -> None:
    """Without -v: no warnings from the libraries framefold drives (Ray's token-authentication
    notice on every local start, Python warnings of dependencies); framefold's own output stays."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    # child loggers keep their own level when ray.init() sets the level of the "ray" logger
    for name in ("ray._private.authentication", "ray._private.worker", "ray._private.services"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framefold", description="Batch video generation from job manifests.")
    p.add_argument("--version", action=_Version, nargs=0, help="print framefold's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a manifest: generate, stitch, upscale, encode, record provenance")
    r.add_argument("manifest", nargs="?", metavar="MANIFEST",
                   help="manifest file: a path or a store URL (s3://bucket/jobs/spring.yaml)")
    r.add_argument("--out", help="output root: a folder or a store URL (default: the manifest's `output`)")
    r.add_argument("--force", action="store_true", help="regenerate items even when their output is current")
    r.add_argument("--only", nargs="+", action="extend", metavar="ID",
                   help="run only these item ids (also ID,ID); before the manifest, its last word is the manifest")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")
    r.add_argument("-v", "--verbose", action="store_true", help="show Prefect and Ray logs")
    r.set_defaults(func=_run)

    sb = sub.add_parser("submit", help="run a manifest on a Ray cluster as a Ray Job: streams its logs, "
                        "prints its summary, exits with its exit code")
    sb.add_argument("manifest", nargs="?", metavar="MANIFEST",
                    help="on storage the cluster sees at this path, inside --working-dir, or a store URL")
    sb.add_argument("--address", metavar="URL", help="the cluster's job server (default: $RAY_API_SERVER_ADDRESS, "
                    "else RAY_ADDRESS's host on port 8265, else http://127.0.0.1:8265)")
    sb.add_argument("--working-dir", type=Path, metavar="DIR", help="upload DIR with the job (the manifest must be "
                    "inside it; a checkout of framefold runs its own code); default: framefold installed on the cluster")
    sb.add_argument("--out", help="output root, as the cluster sees it, or a store URL (default: the manifest's `output`)")
    sb.add_argument("--force", action="store_true", help="regenerate items even when their output is current")
    sb.add_argument("--only", nargs="+", action="extend", metavar="ID",
                    help="run only these item ids (also ID,ID); before the manifest, its last word is the manifest")
    sb.add_argument("--json", action="store_true", help="print the run summary as JSON")
    sb.set_defaults(func=_submit)

    v = sub.add_parser("validate", help="check a manifest without running it")
    v.add_argument("manifest", help="manifest file: a path or a store URL")
    v.set_defaults(func=_validate)

    pl = sub.add_parser("plan", help="show what a run would do per item and why (new, input changed, parameters "
                        "changed, model changed, output missing or damaged, current; docs/cli.md lists them all), "
                        "windows, frames to generate, redundancy and GPU-seconds")
    pl.add_argument("manifest", help="manifest file: a path or a store URL")
    pl.add_argument("--out", help="output root, as given to `run` (default: the manifest's `output`)")
    pl.add_argument("--force", action="store_true", help="plan as `run --force` would (every item made)")
    pl.add_argument("--json", action="store_true", help="print every item's plan and the totals as JSON")
    pl.set_defaults(func=_plan)

    i = sub.add_parser("inspect", help="print the provenance of an output and validate its C2PA content credentials "
                       "(exit 1 when they do not match the file)")
    i.add_argument("video", metavar="FILE",
                   help="an output: an mp4 or webm (its record is inside), a GIF or poster (from its sidecar "
                        "or its credentials); a path or a store URL (s3://bucket/out/sku.mp4)")
    i.add_argument("--json", action="store_true", help="print the whole record as JSON")
    i.set_defaults(func=_inspect)

    s = sub.add_parser("schema", help="print the manifest JSON Schema")
    s.set_defaults(func=_schema)

    sv = sub.add_parser("serve", help="serve a deployment of MANIFEST from this process (runs it on its cron "
                        "schedule and on demand while this process lives); needs PREFECT_API_URL")
    _schedule_options(sv)
    sv.set_defaults(func=_serve)

    dp = sub.add_parser("deploy", help="register a deployment of MANIFEST on a Prefect server, run by a process "
                        "worker (`prefect worker start --pool POOL`); one per call, as many as needed; needs PREFECT_API_URL")
    _schedule_options(dp)
    dp.add_argument("--pool", help=f"a work pool of type 'process' (default: {DEFAULT_POOL!r}, created when missing)")
    dp.set_defaults(func=_deploy)
    return p


DEFAULT_POOL = "framefold"


def _schedule_options(parser: argparse.ArgumentParser) -> None:
    from flows.deploy import DEFAULT_TIMEZONE

    parser.add_argument("manifest", type=str, metavar="MANIFEST", help="the manifest to run (path or URL)")
    parser.add_argument("--name", required=True, help="deployment name: the deployment is framefold-run/NAME")
    parser.add_argument("--cron", metavar="CRON", help="cron schedule, e.g. '0 2 * * *' (02:00 daily); "
                        "without it the deployment runs on demand only")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE, metavar="TZ",
                        help=f"IANA timezone of the cron schedule (default: {DEFAULT_TIMEZONE})")
    parser.add_argument("--out", type=str, help="output root (default: the manifest's `output`)")


def _load(path: str | Path, out_dir: str | Path | None = None, only: list[str] | None = None):
    """(the job, EXIT_OK), or (None, the exit code) after reporting why not: bad input (2), or
    a store that did not answer while the manifest or its inputs were read (1: run again)."""
    from manifests import ManifestError, load_manifest
    from tasks.preflight import preflight  # imports a model library only for a job that needs it

    try:
        return preflight(load_manifest(path, output=out_dir, check_input=_input_checker(), only=only)), EXIT_OK
    except ManifestError as e:
        if e.store_unreachable:
            say(err, ("a store did not answer", "bold red"), " (nothing is known to be wrong with the manifest):")
            say(err, str(e))
            return None, EXIT_FAILED
        say(err, ("invalid manifest", "bold red"), f" ({len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}):")
        say(err, str(e))
        return None, EXIT_BAD_INPUT


def _input_checker():
    """Opens and decodes each input still during validation (tasks.inputs), with the pixel cap."""
    from pydantic import ValidationError

    from manifests import Settings
    from tasks.inputs import checker

    try:
        return checker(Settings().max_image_pixels)
    except ValidationError:  # load_manifest reports the bad setting
        return None


def _validate(args) -> int:
    job, code = _load(args.manifest)
    if job is None:
        return code
    say(out, f"{job.manifest_path}: valid — job {job.name!r}, {len(job.items)} item(s), output {job.output}")
    return EXIT_OK


def _plan(args) -> int:
    job, code = _load(args.manifest, args.out)
    if job is None:
        return code
    from tasks.freshness import History, plan_reason
    from tasks.plan import plan_item

    history = History.of(job.output)
    rows = []
    for item in job.items:
        plan = plan_item(item)
        generated = sum(w.length for w in plan.windows)
        why, gpu = plan_reason(item, job.output, history, force=args.force, signing=job.signer is not None)
        rows.append({
            "id": item.id, "action": "skip" if why == "current" else "make", "why": why,
            "gpu_seconds_estimate": None if gpu is None else round(gpu, 3),
            "frames": item.frames, "fps": item.fps, "loop": item.loop, "loop_start": item.loop_start_rule,
            "size": list(item.size), "output_size": list(item.output_size),
            "windows": len(plan.windows), "window": item.window.length, "overlap": item.window.overlap,
            "frames_generated": generated, "redundancy": round(plan.redundancy, 3),
        })
    totals = {
        "items": len(rows),
        "to_make": sum(r["action"] == "make" for r in rows),
        "frames": sum(r["frames"] for r in rows),
        "windows": sum(r["windows"] for r in rows),
        "frames_generated": sum(r["frames_generated"] for r in rows),
        "gpu_seconds_estimate": None if any(r["gpu_seconds_estimate"] is None for r in rows)
        else round(sum(r["gpu_seconds_estimate"] for r in rows), 3),
    }
    totals["redundancy"] = round(totals["frames_generated"] / max(1, totals["frames"]), 3)
    if args.json:
        print(json.dumps({"job": job.name, "output": str(job.output), "items": rows, "totals": totals}, indent=2))
        return EXIT_OK
    headers = ("item", "run", "why", "GPU-s", "frames", "windows", "size → output")
    cells = [(r["id"], r["action"], r["why"],
              "?" if r["gpu_seconds_estimate"] is None else f"{r['gpu_seconds_estimate']:.1f}", str(r["frames"]),
              f"{r['windows']}×{r['window']}/{r['overlap']}",
              f"{r['size'][0]}×{r['size'][1]} → {r['output_size'][0]}×{r['output_size'][1]}")
             for r in rows[:PLAN_ROWS]]  # fmt: skip
    natural = [max([len(h), *(len(c[k]) for c in cells)]) for k, h in enumerate(headers)]
    # the other columns keep their width; ids, reasons and sizes share the rest, in that order
    # (ids are what a reader looks for), each folding only when the terminal is too narrow
    probe = _plan_table(job.name, headers, cells, {})
    overhead = out.measure(probe, options=out.options.update_width(10**6)).maximum - sum(natural)  # edges, gaps
    room = out.width - overhead - sum(natural) + natural[0] + natural[2] + natural[6]
    size_min = min(natural[6], 9)  # "256×256 →" over "512×512"
    item = min(natural[0], max(8, room - min(natural[2], 8) - size_min))
    why = min(natural[2], max(8, room - item - size_min))
    size = min(natural[6], max(size_min, room - item - why))
    table = _plan_table(job.name, headers, cells, {"item": item, "why": why, "size → output": size})
    if len(rows) > PLAN_ROWS:
        table.caption = f"the first {PLAN_ROWS} of {len(rows)} items (--json lists all)"
    out.print(table)
    say(out, f"{totals['items']} item(s), {totals['frames']} frames delivered, {totals['windows']} windows, "
              f"{totals['frames_generated']} frames generated (redundancy {totals['redundancy']:.2f})")
    gpu = totals["gpu_seconds_estimate"]
    say(out, f"a run would make {totals['to_make']} item(s) and skip {totals['items'] - totals['to_make']}; "
              + ("GPU-seconds: no estimate yet (the ledger has no finished item of this backend and model)" if gpu is None
                 else f"about {gpu:.1f} GPU-seconds (from the ledger's history)"))
    return EXIT_OK


def _plan_table(name: str, headers: tuple[str, ...], cells: list[tuple[str, ...]], widths: dict[str, int]) -> Table:
    """The plan as a table; columns named in ``widths`` fold at that width, the others keep theirs."""
    table = Table(title=text(f"plan: {name}"), box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in headers:
        table.add_column(col, justify="left" if col in ("item", "run", "why", "size → output") else "right",
                         no_wrap=col not in widths, overflow="fold", min_width=widths.get(col),
                         max_width=widths.get(col))
    for cell in cells:
        table.add_row(text(cell[0]), cell[1], text(cell[2]), *cell[3:])
    return table


PLAN_ROWS = 100  # items shown in the plan table (rendering 10,000 rows takes longer than planning them)


def _run(args) -> int:
    # Quiet, offline defaults for Prefect; a configured PREFECT_* still wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # a temporary local Prefect server can take over 20 s to start on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not args.verbose:  # the summary table reports every failure; -v shows the logs
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        _quiet_third_parties()
    job, code = _load(args.manifest, args.out, args.only or None)
    if job is None:
        return code
    if _unknown_only(job, args.only):
        return EXIT_BAD_INPUT
    total = len(args.only) if args.only else len(job.items)
    from tasks.store import StoreError, check_writable

    try:  # a bucket that is missing or may not be written is bad input, named before any work
        check_writable(job.output)
    except StoreError as e:
        error(str(e))
        return EXIT_FAILED if e.unreachable else EXIT_BAD_INPUT  # a store that did not answer: run again
    to_server = _prefect_api_configured()  # else Prefect starts a temporary server of its own
    if not args.force and not to_server:
        # every item current: recorded in the ledger and report.html, without starting Prefect or Ray
        from tasks.freshness import settle_if_current

        try:
            summary = settle_if_current(job, [i for i in job.items if not args.only or i.id in set(args.only)])
        except StoreError as e:  # the store failed while recording the skips: one line, not a traceback
            error(str(e))
            return EXIT_FAILED
        if summary is not None:
            say(err, f"framefold: running {job.name!r} ({total} item(s)) → {job.output}: every item is current")
            if args.json:
                print(json.dumps(summary, indent=2, default=str))
            else:
                _print_summary(summary)
            return EXIT_OK
    from tasks.cluster import precheck
    from tasks.errors import ClusterError

    try:  # an unreachable cluster is named in seconds, before a Prefect server starts
        var = "FRAMEFOLD_RAY_ADDRESS" if os.environ.get("FRAMEFOLD_RAY_ADDRESS") else "RAY_ADDRESS"
        precheck(os.environ.get(var), var)
    except ClusterError as e:
        error(str(e))
        return EXIT_FAILED
    say(err, f"framefold: running {job.name!r} ({total} item(s)) → {job.output}")
    from flows.ephemeral import tied

    # A temporary Prefect server and a Ray node of its own end with this process, even a killed one. Until the
    # run ends stdout carries nothing: Ray prints what the cluster reports (a worker that died, …) to sys.stdout,
    # which would break `--json | jq`; it goes to stderr with the progress.
    with tied(), contextlib.redirect_stdout(sys.stderr):
        summary = _run_tied(job, args, to_server, total)
    if summary is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return EXIT_FAILED if summary["counts"]["failed"] else EXIT_OK


def _run_tied(job, args, to_server: bool, total: int) -> dict | None:
    """The run's summary, or None after reporting a cluster or store that failed the run."""
    from flows.ephemeral import start_early
    from flows.progress import RichReporter, install
    from flows.run import connect_cluster, run_job
    from manifests import Settings
    from tasks.errors import ClusterError
    from tasks.store import StoreError

    if not to_server:
        starting = start_early()
        try:  # items to make: Ray starts while the server does, not after it
            connect_cluster(Settings())
        except ClusterError as e:
            error(str(e))
            return None
        except Exception:  # noqa: BLE001 - a bad FRAMEFOLD_* setting, …: the flow connects again and reports it
            pass
        finally:
            starting.join()
    with RichReporter(total) as rep:
        install(rep)
        try:
            return run_job(job, force=args.force, only=args.only)
        except ClusterError as e:
            error(str(e))
            return None
        except StoreError as e:  # the store failed the run itself (its ledger, or writes since the check above)
            error(str(e))
            return None
        finally:
            install(None)


def _unknown_only(job, only: list[str] | None) -> bool:
    """Whether ``--only`` names an id the manifest does not have (reported)."""
    unknown = sorted(set(only or ()) - {i.id for i in job.items})
    if unknown:
        error(f"--only: no item with id {', '.join(map(repr, unknown))} in {job.manifest_path}")
    return bool(unknown)


def _submit(args) -> int:
    from flows.submit import SubmitError, client, follow, job_for, job_server

    job, code = _load(args.manifest, args.out, args.only or None)  # bad input stops here, before anything reaches the cluster
    if job is None:
        return code
    if _unknown_only(job, args.only):
        return EXIT_BAD_INPUT
    url = job_server(args.address)
    try:
        spec = job_for(args.manifest, out=args.out, force=args.force, only=args.only, working_dir=args.working_dir)
        jobs = client(url)
        job_id = jobs.submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env or None,
                                 metadata={"framefold_job": job.name})
    except SubmitError as e:
        error(str(e))
        return EXIT_BAD_INPUT if "--working-dir" in str(e) else EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - the job server's answer, explained
        from flows.submit import explain

        error(explain(e, url))
        return EXIT_FAILED
    say(err, f"framefold: submitted {job.name!r} as Ray job {job_id} to {url}")
    try:
        _, summary = follow(jobs, job_id, lambda line: say(err, line))
    except KeyboardInterrupt:
        say(err, f"stopped following; the job keeps running on the cluster "
                 f"(`ray job stop {job_id} --address {url}` ends it)")
        return 130
    except Exception as e:  # noqa: BLE001 - the head or its job server went away mid-job
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        error(f"lost the Ray job server at {url} while following job {job_id} ({type(e).__name__}: {first}); "
              f"once the head is back, `ray job status {job_id} --address {url}` tells how the job ended, and "
              f"submitting again resumes what it had not finished")
        return EXIT_FAILED
    try:
        info = jobs.get_job_info(job_id)
    except Exception as e:  # noqa: BLE001
        error(f"lost the Ray job server at {url} after job {job_id} ({type(e).__name__}: {e})")
        return EXIT_FAILED
    code = info.driver_exit_code
    if code is None:
        code = EXIT_OK if str(info.status) in ("SUCCEEDED", "JobStatus.SUCCEEDED") else EXIT_FAILED
    if summary is None:
        error(f"Ray job {job_id} ended {info.status} (exit {code}) without a run "
              f"summary: {info.message or 'see its logs above'}")
        return code or EXIT_FAILED
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return code


def _prefect_api_configured() -> bool:
    """Whether runs report to a Prefect server (PREFECT_API_URL in the environment, the active
    Prefect profile or, when Prefect is loaded already, its settings) — told without importing Prefect."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" in sys.modules:  # e.g. a test harness's temporary settings
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    import tomllib

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, ValueError):
        return False
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    return bool(profiles.get("profiles", {}).get(name, {}).get("PREFECT_API_URL"))


def _print_summary(summary: dict) -> None:
    """The run as a table (one short row per item), then every failure in full under it."""
    table = Table(title=text(f"{summary['job']} — run {summary['run_id']}"), box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)  # no side rules: 80 columns suffice
    flicker = any((r.get("metrics") or {}).get("flicker") for r in summary["items"])  # an item was upscaled
    for col in ("item", "status", "reason", "seconds", "seam", "loop", *(("flicker",) if flicker else ()), "outputs"):
        # ids stay whole (they are what a reader looks for); reasons and file names fold
        table.add_column(col, overflow="fold", no_wrap=col not in ("reason", "outputs"),
                         min_width={"item": max((len(r["id"]) for r in summary["items"]), default=4),
                                    "reason": 6}.get(col))
    style = {"done": "green", "skipped": "cyan", "failed": "red"}

    def ratio(value) -> str:
        return "" if value is None else f"{value:.2f}"

    failed = [r for r in summary["items"] if r["status"] == "failed"]
    for r in summary["items"]:
        m = r.get("metrics") or {}
        # file names without the item id they all start with: "mp4, poster.jpg"
        outputs = ", ".join(o[len(r["id"]) + 1:] if o.startswith(f"{r['id']}.") else o for o in r["outputs"])
        table.add_row(text(r["id"]), text((r["status"], style[r["status"]])),
                      "see below" if r["status"] == "failed" else text(r["reason"]), f"{r['seconds']:.1f}",
                      ratio(m.get("seam_ratio")), ratio(m.get("loop_closure_ratio")),
                      *((ratio((m.get("flicker") or {}).get("ratio")),) if flicker else ()), text(outputs))
    out.print(table)
    if failed:
        say(out, ("failed", "bold red"), f" ({len(failed)}):")
        for ids, reason in _by_reason(failed):  # whole, never cut into a column
            out.print(text(f"  {ids}: {reason}"), soft_wrap=True)
    c = summary["counts"]
    report = f"; report: {summary['report']}" if summary.get("report") else ""
    report += "".join(f"; {what} not written ({why})" for what, why in (summary.get("not_written") or {}).items())
    where = f" on Ray {summary['ray']}" if summary.get("ray") else ""  # which cluster made them
    out.print(text(f"done {c['done']}, skipped {c['skipped']}, failed {c['failed']} in {summary['seconds']:.1f} s"
                   f"{where} → {summary['output']}{report}"), soft_wrap=True)


FAILED_IDS = 10  # item ids named on one line of failures that share a reason


def _by_reason(failed: list[dict]) -> list[tuple[str, str]]:
    """``(ids, reason)`` per distinct reason, in order of first failure: items failing the same
    way (a lost cluster, a missing model) share one line, ``a, b, c (3)``."""
    groups: dict[str, list[str]] = {}
    for r in failed:
        groups.setdefault(r["reason"], []).append(r["id"])
    out = []
    for reason, ids in groups.items():
        named = ", ".join(ids[:FAILED_IDS]) + (f", … ({len(ids)})" if len(ids) > FAILED_IDS else
                                               f" ({len(ids)})" if len(ids) > 1 else "")
        out.append((named, reason))
    return out


def _inspect(args) -> int:
    from tasks import store

    if not store.is_url(args.video):
        return _inspect_file(Path(args.video), args)
    with tempfile.TemporaryDirectory(prefix="framefold-inspect-") as tmp:
        local = _fetch(args.video, Path(tmp))
        return EXIT_BAD_INPUT if local is None else _inspect_file(local, args)


def _fetch(url: str, folder: Path) -> Path | None:
    """An output in a store, downloaded into ``folder`` under its own name, with the sidecars
    that could describe it (a GIF or poster carries no record of its own); None: reported."""
    from manifests.locations import redacted
    from tasks import store

    name = url.rstrip("/").rsplit("/", 1)[-1]
    local = folder / name
    try:
        local.write_bytes(store.read_bytes(url))
    except FileNotFoundError:
        error(f"{redacted(url)}: no such object")
        return None
    except store.StoreError as e:
        error(str(e))
        return None
    if not name.endswith((".mp4", ".webm")):
        for cut in (i for i, ch in enumerate(name) if ch == "." and i > 0):
            sidecar = name[:cut] + ".json"
            with contextlib.suppress(FileNotFoundError, store.StoreError):
                (folder / sidecar).write_bytes(store.read_bytes(url[: len(url) - len(name)] + sidecar))
    return local


def _inspect_file(video: Path, args) -> int:
    from manifests.locations import redacted
    from tasks.encode import TAG, read_tags
    from tasks.errors import EncodeError

    shown = redacted(args.video)  # as given: a path or the store URL (without a secret)
    if not video.is_file():
        error(f"{shown}: no such file")
        return EXIT_BAD_INPUT
    credentials = _credentials(video, shown)
    if credentials is None:
        return EXIT_BAD_INPUT
    try:
        tags = {k.lower(): v for k, v in read_tags(video).items()}  # Matroska (webm) upper-cases tag names
    except EncodeError as e:
        error(f"{shown}: not a readable video ({e})")
        return EXIT_BAD_INPUT
    if TAG in tags:
        try:
            record = json.loads(tags[TAG])
        except ValueError:
            error(f"{shown}: the framefold tag is not valid JSON (file damaged?)")
            return EXIT_BAD_INPUT
    else:  # a GIF or poster carries no tag: its item's sidecar describes it (when the bytes match), or its credentials
        record = _sidecar_of(video) or credentials.get("framefold")
        if record is None:
            error(f"{shown}: no framefold provenance in this file "
                  "(and no sidecar ITEM.json beside it lists this file with these bytes)")
            return EXIT_BAD_INPUT
    c2pa = {k: v for k, v in credentials.items() if k != "framefold"}
    # exit 1: the credentials do not match the bytes, or trust anchors are set and the signer is not among them
    untrusted = c2pa["state"] == "valid" and c2pa.get("trust_anchors_set")
    status = EXIT_FAILED if c2pa["state"] == "invalid" or untrusted else EXIT_OK
    if args.json:
        print(json.dumps({**record, "c2pa": c2pa}, indent=2, ensure_ascii=False))
        return status
    say(out, (str(shown), "bold"))
    for label, value in _readable(record, c2pa):
        out.print(text(f"  {label:12} {value}"), soft_wrap=True)
    return status


def _readable(record: dict, c2pa: dict) -> list[tuple[str, str]]:
    """A provenance record as labelled lines: what a person checks first, nothing as a Python dict."""
    def num(value, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    item, v, plan = record.get("item") or {}, record.get("video") or {}, record.get("plan") or {}
    params, backend, metrics = record.get("params") or {}, record.get("backend") or {}, record.get("metrics") or {}
    lines = [
        ("item", f"{item.get('id')} (job {record.get('job')!r}, run {record.get('run_id')})"),
        ("made", f"{record.get('finished_at')} by framefold {record.get('framefold_version')} ({record.get('reason')})"),
        ("prompt", repr(params.get("prompt") or "")),
    ]
    inputs = [(name, i) for name, i in (record.get("inputs") or {}).items() if i]
    for n, (name, i) in enumerate(inputs or [("none", None)]):
        if i is None:
            lines.append(("inputs", "none"))
            continue
        image = i.get("image") or {}
        lines.append(("inputs" if n == 0 else "", f"{name}: {i.get('path')} ({image.get('format')}, "
                      f"{image.get('width')}×{image.get('height')}) sha256 {i.get('sha256')}"))
    model = ", ".join(f"{k} {backend[k]}" for k in ("backend", "family", "task", "pipeline", "version", "dtype", "scheduler")
                      if backend.get(k))
    device = record.get("device") or {}
    computed = device.get("compute_dtype")
    if computed and backend.get("dtype") and computed != backend["dtype"]:
        on = " and ".join(d.upper() for d in device.get("compute_devices") or [])
        model += f" (computed in {computed if isinstance(computed, str) else ' and '.join(computed)}{' on ' + on if on else ''})"
    lines.append(("model", model + (f"; weights sha256 {backend['weights_digest']}" if backend.get("weights_digest") else "")))
    if backend.get("upscaler"):
        lines.append(("upscaler", ", ".join(f"{k} {v}" for k, v in backend["upscaler"].items() if not isinstance(v, dict))))
    lines.append(("seed", str(record.get("seed"))))
    lines.append(("video", f"{v.get('width')}×{v.get('height')}, {v.get('frames')} frames @ {v.get('fps')} fps, "
                           f"{v.get('codec')} {v.get('pix_fmt')}"))
    windows = plan.get("windows") or []
    lengths = sorted({w[1] for w in windows})
    overlap = windows[0][1] - (windows[1][0] - windows[0][0]) if len(windows) > 1 else 0
    lines.append(("windows", f"{len(windows)} × {'/'.join(map(str, lengths))} frames, overlap {overlap}, "
                             f"{plan.get('weighting')} weighting, mode {plan.get('mode')}"
                             + (", circular (loop)" if plan.get("circular") else "")
                             + _loop_start_note(plan.get("loop_start"))
                             + (f", {plan['windows_reused']} reused" if plan.get("windows_reused") else "")))
    drift = metrics.get("colour_drift")
    largest = metrics.get("largest_step_ratio")
    lines.append(("metrics", f"seam {num(metrics.get('seam_ratio'))} · loop closure {num(metrics.get('loop_closure_ratio'))}"
                             + (f" (largest step {num(largest)})" if largest is not None else "")
                             + f" · flicker {num((metrics.get('flicker') or {}).get('ratio'))}"
                             f" · colour drift {num(drift.get('max_mean_spread') if isinstance(drift, dict) else drift, 4)}"))
    lines.append(("content key", str(record.get("content_key"))))
    lines.append(("credentials", _c2pa_line(c2pa)))
    return lines


def _loop_start_note(cut: dict | None) -> str:
    """', file starts at frame 37 (after its smoothest step; generated wrap 1.31)' for a loop started at its
    quietest step (loop_start: smoothest)."""
    if not isinstance(cut, dict) or cut.get("rule") != "smoothest":
        return ""
    wrap = cut.get("generated_wrap_ratio")
    return (f", file starts at frame {cut['start_frame']} (after its {cut.get('rule')} step"
            + (f"; generated wrap {wrap:.2f}" if isinstance(wrap, (int, float)) else "") + ")")


def _credentials(path: Path, shown: str | None = None) -> dict | None:
    """The file's C2PA credentials as read and validated (trusting FRAMEFOLD_C2PA_TRUST_ANCHORS),
    or None when the trust anchors setting is unusable (reported)."""
    from pydantic import ValidationError

    from manifests import Settings
    from tasks import credentials

    try:
        anchors_file = Settings().c2pa_trust_anchors
    except ValidationError as e:
        error(f"invalid FRAMEFOLD_* setting: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}")
        return None
    anchors = None
    if anchors_file is not None:
        try:
            anchors = anchors_file.read_text()
        except OSError as e:
            error(f"FRAMEFOLD_C2PA_TRUST_ANCHORS: cannot read {anchors_file}: {e.strerror}")
            return None
    try:
        return {**credentials.read(path, trust_anchors=anchors), "trust_anchors_set": anchors is not None}
    except ValueError as e:
        error(f"FRAMEFOLD_C2PA_TRUST_ANCHORS ({anchors_file}): {e}")
        return None
    except OSError as e:
        error(f"{shown or path}: cannot read ({e.strerror or e})")
        return None


def _c2pa_line(c2pa: dict) -> str:
    state = c2pa["state"]
    if state in ("absent", "unsupported"):
        return "no content credentials" if state == "absent" else "format cannot carry content credentials (see the sidecar)"
    words = {"trusted": "valid, signer trusted",
             "valid": "UNTRUSTED: intact, but the signer is not in FRAMEFOLD_C2PA_TRUST_ANCHORS" if c2pa.get("trust_anchors_set")
             else "valid, signer not checked (set FRAMEFOLD_C2PA_TRUST_ANCHORS to check it)",
             "invalid": "TAMPERED: the file changed after signing" if c2pa["tampered"] else "INVALID"}[state]
    more = "; ".join(c2pa["errors"][:2]) if state == "invalid" else ""
    return f"{words} — signed by {c2pa['signer']}, source type {c2pa['digital_source_type']}" + (f" ({more})" if more else "")


def _sidecar_of(path: Path) -> dict | None:
    """The sidecar record next to ``path`` that lists it as an output with its current sha256."""
    from tasks import provenance, store

    name = path.name
    digest = None
    for cut in (i for i, ch in enumerate(name) if ch == "." and i > 0):
        record = provenance.read_sidecar(path.with_name(name[:cut] + ".json"))
        for o in provenance.outputs_of(record):
            if Path(o["path"]).name == name:
                digest = digest or store.sha256_file(path)
                if o.get("sha256") == digest:
                    return {k: v for k, v in record.items() if k not in ("output", "outputs")}
    return None


def _schema(args) -> int:
    from manifests import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return EXIT_OK


def _schedule_setup(args):
    """(API URL, deployment), or None after reporting bad input or an unreachable server."""
    from flows.deploy import ScheduleError, check_schedule

    try:
        check_schedule(name=args.name, cron=args.cron, timezone=args.timezone)
    except ScheduleError as e:
        error(f"--{e.field}: {e.message}")
        return None
    if _load(args.manifest, args.out)[0] is None:
        return None
    api_url = _prefect_api_url()
    if api_url is None or not _server_answers(api_url):
        return None
    from flows.deploy import deployment

    return api_url, deployment(args.manifest, name=args.name, cron=args.cron, timezone=args.timezone, output=args.out)


def _serve(args) -> int:
    setup = _schedule_setup(args)
    if setup is None:
        return EXIT_BAD_INPUT
    api_url, dep = setup
    from prefect import serve

    from flows.run import item_threads
    from manifests import Settings

    # Served runs use the flow's default thread pool: bound it like `framefold run` does.
    os.environ.setdefault("PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS", str(item_threads(Settings())))
    _print_deployments([dep], api_url, "serving")
    say(err, "stop with Ctrl-C (the schedule is paused while nothing serves it)")
    serve(dep, print_starting_message=False)
    return EXIT_OK


def _deploy(args) -> int:
    setup = _schedule_setup(args)
    if setup is None:
        return EXIT_BAD_INPUT
    api_url, dep = setup
    from prefect import deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    pool_name = args.pool or DEFAULT_POOL
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(pool_name)
        except ObjectNotFound:
            if args.pool:  # named on purpose: a typo must not create a pool nobody polls
                error(f"--pool: no work pool {args.pool!r} on {api_url}; create it with "
                      f"`prefect work-pool create {args.pool} --type process`")
                return EXIT_BAD_INPUT
            pool = client.create_work_pool(WorkPoolCreate(name=pool_name, type="process"))
    if pool.type != "process":
        error(f"--pool: work pool {pool_name!r} is of type {pool.type!r}; framefold deployments carry no image or "
              "code storage and need a 'process' pool on a machine with framefold installed")
        return EXIT_BAD_INPUT
    from flows.run import item_threads
    from manifests import Settings

    # A deployed run uses the flow's default thread pool: bound it like `framefold run` does.
    dep.job_variables = {"env": {"PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS": str(item_threads(Settings()))}}
    deploy(dep, work_pool_name=pool_name, build=False, push=False, print_next_steps_message=False, ignore_warnings=True)
    _print_deployments([dep], api_url, f"deployed to work pool {pool_name!r}")
    say(out, f"runs start when a worker polls the pool: prefect worker start --pool {pool_name}")
    return EXIT_OK


def _prefect_api_url() -> str | None:
    """PREFECT_API_URL (environment or Prefect profile), or None after explaining why it is needed."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        error("PREFECT_API_URL is not set. Schedules need a running Prefect server "
              "(the temporary local one never creates scheduled runs). Start one with\n"
              "  prefect server start --host 127.0.0.1 --port 4200\n"
              "and set PREFECT_API_URL=http://127.0.0.1:4200/api")
        return None
    return url


def _server_answers(api_url: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(sync_client=True) as client:
        problem = client.api_healthcheck()  # one attempt: an answer now, not after a minute of retries
    if problem is not None:
        error(f"no Prefect server answers at PREFECT_API_URL={api_url} "
              f"({type(problem).__name__}: {problem}); start it or fix the address")
        return False
    return True


def _print_deployments(deployments, api_url: str, doing: str) -> None:
    table = Table(title=text(f"{doing} on {api_url}"))
    for col in ("deployment", "schedule", "manifest", "overlapping runs"):
        table.add_column(col, overflow="fold", no_wrap=col != "manifest")
    for d in deployments:
        schedule = "; ".join(f"{s.schedule.cron} ({s.schedule.timezone})" for s in d.schedules) or "on demand"
        table.add_row(text(f"{d.flow_name}/{d.name}"), text(schedule), text(d.parameters["manifest"]), "cancelled")
    out.print(table)


class _Version(argparse.Action):
    """--version, looked up only when asked for (importlib.metadata costs ~0.3 s at every start)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"framefold {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("framefold")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def command() -> None:
    """The `framefold` command: main() in a process of its own. Once main() is done, whatever
    is still written to stdout while the process winds down goes to stderr (Ray's C++ core has
    printed `[state-dump]` lines there after a long run's summary), so `framefold run --json |
    jq` reads one document."""
    code = main()
    sys.stdout.flush()
    with contextlib.suppress(OSError):  # stderr closed: nothing to protect
        os.dup2(2, 1)
    sys.exit(code)


if __name__ == "__main__":
    command()
