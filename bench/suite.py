"""Run every figure in one process on this machine and write RESULTS.md, PNG plots and
results.json (the raw numbers) to ``--out`` (default: bench/; with ``--quick``, whose
numbers only show that everything runs, a folder in the temporary directory).

Order: the in-process figures first (6 redundancy, 1 stitch kernel, 3 orchestration
with its own local Ray per N), then the subprocess figures (2 memory and 4 throughput,
``framefold run`` against one Prefect server started here; 5 the FreeNoise peer).
``--quick`` overlaps the server's start with 6, 1 and 3 and the peer with 2 and 4. A
figure that fails is reported in RESULTS.md with its error and the others still run;
the exit code is then 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from bench import memory, orchestration, peer, redundancy, resample, stitch_kernel, thin_driver, throughput
from bench.common import ROOT, PrefectServer, child_env, machine_facts, table

TITLES = {
    "1": "Figure 1: stitch kernel vs the memory limit",
    "2": "Figure 2: memory vs video length",
    "3": "Figure 3: orchestration overhead with simulated GPUs",
    "4": "Figure 4: end-to-end throughput",
    "5": "Figure 5: framefold codenoise vs diffusers FreeNoise — measured by bench/peer.py",
    "6": "Figure 6: redundancy (frames generated ÷ frames delivered)",
    "7": "Figure 7: uint8 Lanczos resampling, kernel vs Pillow",
    "8": "Figure 8: the thin driver (driver cost per item over many items; finishing on 1 vs 2 worker nodes)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="framefold benchmark suite")
    parser.add_argument("--quick", action="store_true", help="every figure at tiny sizes (under 2 minutes)")
    parser.add_argument("--out", type=Path, help="where RESULTS.md and the plots go (default: bench/, or with "
                        "--quick a folder in the temporary directory)")
    parser.add_argument("--only", nargs="+", choices=sorted(TITLES), metavar="N",
                        help="only these figures; the others are kept from the last full run's results.json")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    figures = set(args.only or TITLES)
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "framefold-bench-quick" if args.quick else ROOT / "bench"
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    facts = machine_facts()
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    load: dict[str, float] = {}  # 1-minute load average, the higher of start and end of each figure
    with tempfile.TemporaryDirectory(prefix="framefold-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = child_env(work)
        os.environ.update({k: env[k] for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED")})  # Ray workers (figure 3)

        def step(key: str, fn, *fargs) -> None:
            if key not in figures:
                return
            _log(f"{TITLES[key]} …")
            load[key] = os.getloadavg()[0]
            tick = time.perf_counter()
            try:
                results[key] = fn(args.quick, *fargs)
            except Exception as e:  # noqa: BLE001 - report it, run the other figures
                errors[key] = f"{type(e).__name__}: {e}"
                _log("".join(traceback.format_exception(e))[-4000:])
            seconds[key] = time.perf_counter() - tick
            load[key] = max(load[key], os.getloadavg()[0])
            _log(f"  {seconds[key]:.0f} s")

        with contextlib.ExitStack() as stack:
            # --quick boots the Prefect server while figures 6, 1 and 3 run, and runs the
            # peer's subprocesses alongside figures 2 and 4, to stay under two minutes (its
            # numbers only show that everything runs); a full run measures one thing at a time.
            server = stack.enter_context(PrefectServer(work)) if args.quick and figures & {"2", "4"} else None
            step("6", redundancy.run, work)
            step("7", resample.run, work)
            step("1", stitch_kernel.run, work)
            step("3", orchestration.run, work)
            peer_thread = threading.Thread(target=step, args=("5", peer.run, work, env)) if args.quick else None
            if peer_thread:
                peer_thread.start()
            if figures & {"2", "4"}:
                tick = time.perf_counter()
                server = server or stack.enter_context(PrefectServer(work))
                served = {**env, "PREFECT_API_URL": server.url()}
                seconds["waiting for the Prefect server"] = time.perf_counter() - tick
                step("2", memory.run, work, served)
                step("4", throughput.run, work, served)
            if peer_thread:
                peer_thread.join()
            step("8", thin_driver.run, work, env)
        if not args.quick:  # with the Prefect server stopped
            step("5", peer.run, work, env)
    facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    total = time.perf_counter() - started
    remeasured = ""
    previous_json = args.out / "results.json"
    if args.only and not args.quick and previous_json.exists():  # the other figures as the last full run measured them
        before = json.loads(previous_json.read_text())
        if not before.get("quick"):
            for key, value in before.get("figures", {}).items():
                if key not in figures:
                    results[key] = value
                    seconds.setdefault(key, before.get("seconds", {}).get(key, 0.0))
                    if key in before.get("load", {}):
                        load.setdefault(key, before["load"][key])
            figures = figures | set(before.get("figures", {}))
            remeasured = (f" Figure(s) {', '.join(sorted(set(args.only)))} re-measured on {facts['date_utc']} at commit "
                          f"{facts['git']} (`python -m bench --only {' '.join(sorted(set(args.only)))}`); the others "
                          f"are from the run of {before['machine']['date_utc']} at commit {before['machine']['git']}.")
            facts = {**before["machine"], "load_average_at_end": before["machine"].get("load_average_at_end")}
            total = before.get("total_s", total)
    plots = _plots(results, args.out)
    # sections measured by other scripts (bench/quality.py: "## Quality…") are kept at the end
    previous = (args.out / "RESULTS.md").read_text() if (args.out / "RESULTS.md").exists() else ""
    kept = previous[previous.find("\n## Quality"):] if "\n## Quality" in previous else ""
    text = _markdown(args.quick, facts, results, errors, seconds, load, total, plots, figures)
    if remeasured:
        text = text.replace(" Regenerate rather than edit.", f" Regenerate rather than edit.{remeasured}", 1)
    (args.out / "RESULTS.md").write_text(text.rstrip("\n") + "\n" + kept)
    (args.out / "results.json").write_text(json.dumps(
        {"quick": args.quick, "machine": facts, "seconds": seconds, "load": load, "total_s": total, "errors": errors,
         "figures": results}, indent=1, default=str))
    _log(f"wrote {args.out / 'RESULTS.md'} in {total:.0f} s" + (f"; failed: {sorted(errors)}" if errors else ""))
    return 1 if errors else 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _plots(results: dict, out: Path) -> dict[str, list[str]]:
    makers = {
        "1": lambda d: stitch_kernel.plot(d, out),
        "2": lambda d: memory.plot(d, results.get("5"), out),
        "3": lambda d: orchestration.plot(d, out),
        "4": lambda d: throughput.plot(d, out),
        "5": lambda d: peer.plot(d, out),
        "6": lambda d: redundancy.plot(d, out),
        "7": lambda d: resample.plot(d, out),
        "8": lambda d: thin_driver.plot(d, out),
    }
    return {k: makers[k](d) for k, d in results.items()}


def _section(key: str, data: dict, results: dict) -> str:
    if key == "1":
        return stitch_kernel.section(data)
    if key == "2":
        return memory.section(data, results.get("5"))
    if key == "3":
        return orchestration.section(data)
    if key == "4":
        return throughput.section(data)
    if key == "5":
        return peer.section(data)
    if key == "7":
        return resample.section(data)
    if key == "8":
        return thin_driver.section(data)
    return redundancy.section(data)


def _markdown(quick, facts, results, errors, seconds, load, total, plots, figures) -> str:
    cmd = "python -m bench" + (" --quick" if quick else "")
    lines = [
        "# framefold benchmarks",
        "",
        f"Written by `{cmd}` (`make bench{'-quick' if quick else ''}`) on {facts['date_utc']}; the suite took "
        f"{total:.0f} s. Regenerate rather than edit. Ratios compare runs made side by side in the same run; "
        "absolute times are context only (this machine is shared, so its load is recorded below).",
        "",
        "## Machine",
        "",
        table(["fact", "value"], [
            ["CPUs (usable)", f"{facts['cpus']} ({facts['cpus_usable']})"], ["CPU", facts["cpu_model"]],
            ["torch CPU capability", facts["torch_cpu_capability"]], ["memory", f"{facts['memory_gib']} GiB"],
            ["load average (1, 5, 15 min) at start", ", ".join(map(str, facts["load_average_at_start"]))],
            ["load average at end", ", ".join(map(str, facts["load_average_at_end"]))],
            ["Python", facts["python"]], ["torch (intra-op threads)", f"{facts['torch']} ({facts['torch_threads']})"],
            ["ray", facts["ray"]], ["prefect", facts["prefect"]], ["diffusers", facts["diffusers"]],
            ["numpy", facts["numpy"]], ["platform", facts["platform"]], ["framefold commit", facts["git"]],
        ]),
        "",
        table(["step", "seconds", "load average (1 min, higher of start and end)"],
              [[TITLES.get(k, k).split(":")[0], f"{v:.0f}", f"{load[k]:.1f}" if k in load else ""]
               for k, v in seconds.items()]),
        "",
        "## Headline ratios",
        "",
        _headline(results),
        "",
    ]
    for key in sorted(TITLES):
        if key not in figures:
            continue
        lines += [f"## {TITLES[key]}", ""]
        module = {"1": stitch_kernel, "2": memory, "3": orchestration, "4": throughput, "5": peer, "6": redundancy,
                  "7": resample, "8": thin_driver}[key]
        lines += [module.__doc__.strip().split("\n\n", 1)[-1].strip(), ""]
        if key in errors:
            lines += ["**Not measured: the figure failed:**", "", "```", errors[key], "```", ""]
            continue
        lines += [_section(key, results[key], results), ""]
        lines += [f"![{TITLES[key]}]({name})" for name in plots.get(key, [])] + [""]
    return "\n".join(lines)


def _headline(results: dict) -> str:
    out = []
    if "1" in results:
        d = results["1"]
        for n in d["threads"]:
            rows = [r for r in d["rows"] if r["threads"] == n]
            for dtype in ("float32", "uint8"):
                rs = [r for r in rows if r["dtype"] == dtype]
                s = [r["gbps"]["streaming"] / r["gbps"]["copy"] for r in rs]
                ref = [r["seconds"]["reference"] / r["seconds"]["streaming"] for r in rs]
                out.append(f"- Stitch kernel ({n} thread(s), {dtype}): streaming = {min(s):.2f}–{max(s):.2f}× copy "
                           f"bandwidth (goal ≥ 0.5), {min(ref):.1f}–{max(ref):.1f}× the reference's speed (goal ≥ 1).")
    if "2" in results:
        rows = results["2"]["rows"]
        a, b = rows[0], rows[-1]
        out.append(f"- Memory, {a['frames']} → {b['frames']} frames: framefold process peak RSS "
                   f"{b['peak_driver'] / a['peak_driver']:.2f}×, whole process tree {b['peak_tree'] / a['peak_tree']:.2f}× "
                   "(goal ≤ 1.2).")
    fn = [r for r in results.get("5", {}).get("freenoise", []) if "peak_rss" in r]
    if len(fn) > 1:
        out.append(f"- diffusers FreeNoise, {fn[0]['frames']} → {fn[-1]['frames']} frames: peak RSS "
                   f"{fn[-1]['peak_rss'] / fn[0]['peak_rss']:.2f}×, wall {fn[-1]['wall_s'] / fn[0]['wall_s']:.1f}×.")
        free = {r["frames"]: r for r in fn}
        for label, rows in results["5"].get("framefold", {}).items():
            rows = [r for r in rows if "peak_rss" in r and r["frames"] in free]
            if rows:
                r = rows[-1]
                out.append(f"- framefold {label} at {r['frames']} frames: generate "
                           f"{r['generate_s'] / (free[r['frames']]['load_s'] + free[r['frames']]['generate_s']):.2f}× FreeNoise's time, peak RSS "
                           f"(coordinator + actor) {(r['peak_rss'] + r['actor_peak_rss']) / free[r['frames']]['peak_rss']:.2f}× "
                           "FreeNoise's (goals: < 1 at stride 12, ≤ 0.5).")
    if "3" in results:
        for variant, label in (("tasks", "Ray tasks"), ("actors", "model actors")):
            rows = [r for r in results["3"]["rows"] if r["variant"] == variant]
            ratios = ", ".join(f"N={r['gpus']}: {r['ratio']:.2f}" for r in rows)
            out.append(f"- Orchestration ({label}), wall ÷ ideal ({results['3']['windows']} windows × "
                       f"{results['3']['cost_s'] * 1e3:.0f} ms): {ratios} (goal ≤ 1.10).")
    if "4" in results:
        for r in results["4"]["rows"]:
            out.append(f"- {r['label']}: {r['items'] / r['wall_s'] * 3600:,.0f} items/hour, "
                       f"{r['video_s'] / r['wall_s']:.3f} s of video per wall-clock second, first output after "
                       f"{r['first_output_s']:.1f} s.")
    if "6" in results:
        r = next((r for r in results["6"]["rows"] if (r["length"], r["overlap"]) == (16, 4)), None)
        if r:
            out.append(f"- Redundancy at the default W=16, O=4: {r['linear']:.3f} (linear), {r['circular']:.3f} "
                       f"(loop); limit {r['limit']:.3f}.")
    return "\n".join(out)
