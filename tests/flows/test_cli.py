"""The CLI on bad input: exit 2, a message naming file and field, nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tests.conftest import draw_image

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def _valid(tmp_path: Path) -> dict:
    draw_image(tmp_path / "img" / "a.png")
    return {
        "version": 1, "name": "cli", "output": "out",
        "defaults": {"frames": 16, "fps": 8, "size": [32, 32], "window": {"length": 8, "overlap": 2}},
        "items": [{"id": "a", "image": "img/a.png"}, {"id": "b", "image": "img/a.png"}],
    }


def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


MALFORMED = [
    ("unknown-key", _set("defaults.windw", {"length": 8}), "defaults.windw"),
    ("wrong-type", _set("defaults.fps", "fast"), "defaults.fps"),
    ("overlap-ge-length", _set("items.0.window", {"length": 8, "overlap": 8}), "items[0].window.overlap"),
    ("missing-image", _set("items.1.image", "img/nope.png"), "items[1].image"),
    ("duplicate-id", _set("items.1.id", "a"), "items[1].id"),
    ("unsafe-id", _set("items.0.id", "../evil"), "items[0].id"),
    ("escaping-path", _set("items.0.image", "../../etc/passwd"), "items[0].image"),
    ("escaping-output", _set("output", "../../elsewhere"), "output"),
    ("size-too-big", _set("defaults.size", [8192, 8192]), "defaults.size"),
    ("frames-too-many", _set("items.0.frames", 10**6), "items[0].frames"),
    ("odd-size", _set("defaults.size", [33, 32]), "defaults.size"),
    ("bad-version", _set("version", 2), "version"),
    ("bad-weighting", _set("defaults.window", {"weighting": "hann"}), "defaults.window.weighting"),
    ("non-whole-duration", _set("items.0.duration", 1.01), "items[0]"),
    ("negative-seed", _set("items.0.seed", -1), "items[0].seed"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_manifest_exits_2_naming_the_field(tmp_path, capsys, case, mutate, field):
    doc = _valid(tmp_path)
    mutate(doc)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(path)]) == 2
    message = capsys.readouterr().err
    assert "job.yaml" in message and field in message
    assert "Traceback" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, nothing written


@pytest.mark.parametrize("text", [b"version: 1\nname: [unclosed\n", b"\x00\xff\xfe garbage", b"- just\n- a list\n"])
def test_unparseable_manifests_exit_2(tmp_path, capsys, text):
    path = tmp_path / "job.yaml"
    path.write_bytes(text)
    assert main(["validate", str(path)]) == 2
    assert "job.yaml" in capsys.readouterr().err


def test_unknown_only_id_exits_2(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_valid(tmp_path)))
    assert main(["run", str(path), "--only", "zzz"]) == 2
    assert "zzz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validate_plan_and_schema(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_valid(tmp_path)))
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # 16 frames, W=8, O=2, not looping: windows start 0, 6, 8 (last aligned to the end)
    assert [i["windows"] for i in plan["items"]] == [3, 3]
    assert plan["totals"]["frames_generated"] == 48 and plan["totals"]["redundancy"] == 1.5
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"version", "name", "output", "defaults", "items", "catalog"} <= set(schema["properties"])


def test_plan_table_of_a_large_catalog_shows_the_first_hundred(tmp_path, capsys):
    doc = _valid(tmp_path)
    doc["items"] = []
    (tmp_path / "rows.csv").write_text("sku\n" + "".join(f"row-{n:03d}\n" for n in range(150)))
    doc["defaults"]["image"] = "img/a.png"
    doc["catalog"] = {"path": "rows.csv", "columns": {"id": "sku"}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["plan", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "row-099" in printed and "row-100" not in printed and "first 100 of 150" in printed
    assert "150 item(s)" in printed
    assert main(["plan", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 150


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_manifests_validate_and_plan(example, capsys):
    assert main(["validate", str(EXAMPLES / example)]) == 0
    assert main(["plan", str(EXAMPLES / example)]) == 0
    assert "redundancy" in capsys.readouterr().out


def test_inspect_refuses_non_videos(tmp_path, capsys):
    junk = tmp_path / "x.mp4"
    junk.write_text("not a video")
    assert main(["inspect", str(junk)]) == 2
    assert main(["inspect", str(tmp_path / "missing.mp4")]) == 2
    err = capsys.readouterr().err
    assert "x.mp4" in err and "missing.mp4" in err


# A filter that is malformed, or says what a condition on one table may not, stops the CLI
# with exit 2 and the character where it goes wrong — never a traceback.
BAD_FILTERS = [
    "price >", "price = = 3", "price = 3 and", "(price = 3", "price = 3)", "category = 'mugs", "`price = 3",
    "category = mugs", "price 3", "category in ()", "category is mugs", "1 = 2", "category = null",
    "price > 1.2.3", "updated_at > 2026-11-01", "price = 3; DROP TABLE t", "__import__('os').system('x')",
    "sleep(5) = 0", "lowr(category) = 'mugs'", "price IN (SELECT price FROM other)", "EXISTS (SELECT 1)",
    "SELECT * FROM t", "other.price > 3", "price = ?", "price + 1 > 3", "category LIKE sku", "price",
    "price <=> 3", "(" * 40 + "price = 1" + ")" * 40,
    # well formed, but not for this table: located by column or value
    "categroy = 'mugs'", "price > 'cheap'", "category LIKE 5", "price LIKE '1%'", "lower(price) = 'x'",
    "updated_at > 'yesterday'",
]


@pytest.mark.parametrize("bad", BAD_FILTERS)
def test_bad_filters_exit_2_with_a_located_message(tmp_path: Path, capsys, bad: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sku": ["a", "b"], "category": ["mugs", "cups"], "price": [5.0, 9.0],
                             "updated_at": pa.array([0, 1], pa.timestamp("s"))}), tmp_path / "catalog.parquet")
    doc = _valid(tmp_path)
    doc["items"] = []
    doc["defaults"]["image"] = "img/a.png"
    doc["catalog"] = {"path": "catalog.parquet", "columns": {"id": "sku"}, "filter": bad}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path.name}: catalog.filter: " in err, err
    assert re.search(r"character \d+|nested deeper|unknown column 'categroy'; did you mean 'category'", err), err


def test_user_strings_are_printed_verbatim_never_as_markup(tmp_path: Path, capsys) -> None:
    doc = _valid(tmp_path)
    doc["output"] = "out[/bold][x]"
    path = tmp_path / "m[red].yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 0
    assert "out[/bold][x]" in capsys.readouterr().out.replace("\n", "")
    assert main(["run", str(path), "--only", "[/bold]", "a[b]"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "error: --only: no item with id '[/bold]', 'a[b]' in" in err and "m[red].yaml" in err
def test_options_may_come_anywhere_on_the_line(small_job, capsys):
    # `--only` before the manifest: its last word is the manifest; ids may be comma-separated
    assert main(["run", "--only", "zzz", str(small_job)]) == 2
    assert "no item with id 'zzz'" in capsys.readouterr().err
    assert main(["run", "--only", "a,zzz", "--force", str(small_job), "--json"]) == 2
    err = capsys.readouterr().err
    assert "'zzz'" in err and "'a'" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--only", "a"])  # no manifest at all
    assert exit_.value.code == 2
    assert "required: MANIFEST" in capsys.readouterr().err
    # submit reads its line the same way, and refuses an unknown id before reaching a cluster
    assert main(["submit", "--only", "a,zzz", str(small_job), "--address", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "no item with id 'zzz'" in err and "'a'" not in err and "job server" not in err


def test_version_is_looked_up_only_when_asked(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert re.fullmatch(r"framefold \S+\n", capsys.readouterr().out)


def test_plan_table_keeps_ids_whole_on_a_narrow_terminal(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    doc = _valid(tmp_path)
    doc["items"] = [{"id": "product-sku-00042-blue-large", "image": "img/a.png"}, {"id": "b", "image": "img/a.png"}]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    for width in (80, 120):  # 80: the usual terminal, and what a pipe gets
        screen = io.StringIO()
        monkeypatch.setattr("flows.cli.out", Console(file=screen, width=width, highlight=False))
        assert main(["plan", str(path)]) == 0
        lines = screen.getvalue().splitlines()
        assert all(len(line) <= width for line in lines), lines  # nothing cut off at the edge
        rows = [line.split() for line in lines if "32×32 → 32×32" in line]  # every column there
        assert [r[:3] for r in rows] == [["product-sku-00042-blue-large", "make", "new"], ["b", "make", "new"]], lines


def test_failures_sharing_a_reason_share_a_line():
    from flows.cli import FAILED_IDS, _by_reason

    failed = [{"id": f"sku-{n}", "reason": "lost the cluster"} for n in range(FAILED_IDS + 3)]
    failed.insert(1, {"id": "odd", "reason": "bad still"})
    failed.append({"id": "pair", "reason": "bad still"})
    groups = _by_reason(failed)
    assert [reason for _, reason in groups] == ["lost the cluster", "bad still"]  # in order of first failure
    ids, _ = groups[0]
    assert ids.startswith("sku-0, sku-1, ") and ids.endswith(f"sku-{FAILED_IDS - 1}, … ({FAILED_IDS + 3})"), ids
    assert groups[1][0] == "odd, pair (2)"
    assert _by_reason([{"id": "one", "reason": "r"}]) == [("one", "r")]


def test_a_json_summary_is_the_last_thing_the_commands_stdout_carries() -> None:
    """In the `framefold` process (the console script's entry point, command()), what is written
    to stdout once main() is done goes to stderr (Ray's C++ core prints `[state-dump]` lines
    there while a long run's process winds down): stdout holds one JSON document."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "framefold"]
    assert script.value == "flows.cli:command"
    program = ("import atexit, json, os, flows.cli as cli\n"
               "atexit.register(os.write, 1, b'[state-dump] late\\n')\n"  # runs as the process exits
               "cli.main = lambda: print(json.dumps({'counts': {'done': 1}}, indent=2)) or 0\n"
               "cli.command()\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == {"counts": {"done": 1}}
    assert done.stderr.endswith("[state-dump] late\n")
