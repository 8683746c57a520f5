"""The benchmark suite runs end to end and writes its report: each figure's section with a
table, and its plots. What it measures is not checked (no timing assertions). The test runs
the figures that exercise the suite's own machinery (kernel timing, fake-GPU orchestration,
the report); figures 2, 4 and 5 run framefold and diffusers as subprocesses for a minute
more, and `make bench-quick` runs every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    1: "stitch kernel vs the memory limit",
    2: "memory vs video length",
    3: "orchestration overhead with simulated GPUs",
    4: "end-to-end throughput",
    5: "framefold codenoise vs diffusers FreeNoise — measured by bench/peer.py",
    6: "redundancy (frames generated ÷ frames delivered)",
    7: "uint8 Lanczos resampling, kernel vs Pillow",
}
PLOTS = {1: "fig1_stitch_kernel.png", 2: "fig2_memory.png", 3: "fig3_orchestration.png", 4: "fig4_throughput.png",
         5: "fig5_peer.png", 6: "fig6_redundancy.png", 7: "fig7_resample.png"}
RUN = (1, 3, 6, 7)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_suite_writes_its_figures_and_plots(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), "--only", *map(str, RUN)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (out / "RESULTS.md").read_text()
    assert "## Machine" in text and "## Headline ratios" in text
    sections = {m[1]: m[2] for m in re.finditer(r"^## Figure (\d): .*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)}
    assert set(sections) == {str(n) for n in RUN}
    for n in RUN:
        assert f"## Figure {n}: {FIGURES[n]}\n" in text
        assert "Not measured" not in sections[str(n)], f"figure {n} failed"
        assert "\n|---|" in sections[str(n)], f"figure {n} has no table"
    for name in (PLOTS[n] for n in RUN):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in text
    assert (out / "results.json").is_file()
