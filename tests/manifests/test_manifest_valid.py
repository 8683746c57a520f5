"""Valid manifests: what load_manifest resolves, how defaults merge, catalogs, schema export."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from manifests import (
    ItemSpec,
    Job,
    ManifestError,
    MotionSpec,
    Problem,
    Settings,
    UpscaleSpec,
    WindowSpec,
    load_manifest,
    manifest_json_schema,
)


def _by_id(job: Job) -> dict[str, ItemSpec]:
    return {item.id: item for item in job.items}


def test_valid_manifest_with_parquet_catalog(project: Any, base: dict[str, Any]) -> None:
    project.parquet(
        {
            "sku": ["sku-1", "sku-2", "sku-3"],
            "image_path": ["images/mug-blue.png", "images/mug-red.png", None],
            "caption": ["a mug", None, "no image here, inherits defaults.image"],
            "seed": [1, None, 3],
            "loop": [True, False, None],
        }
    )
    base["defaults"]["image"] = "images/mug-blue.png"
    base["catalog"] = {
        "path": "catalog.parquet",
        "columns": {"id": "sku", "image": "image_path", "prompt": "caption", "seed": "seed", "loop": "loop"},
    }
    path = project.write(base)

    job = load_manifest(path)

    root = project.root.resolve()
    assert job.manifest_path == path.resolve()
    assert job.root == root
    assert job.manifest_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert job.name == "spring-catalog"
    assert job.output == root / "out" / "spring-catalog"
    assert [item.id for item in job.items] == ["mug-blue", "mug-red", "sku-1", "sku-2", "sku-3"]
    assert [item.source for item in job.items] == ["items[0]", "items[1]", "catalog row 1", "catalog row 2", "catalog row 3"]

    items = _by_id(job)
    blue = items["mug-blue"]
    assert blue.image == root / "images" / "mug-blue.png"
    assert blue.mask is None
    assert blue.prompt == "steam rising"
    assert (blue.backend, blue.seed, blue.fps, blue.frames, blue.duration) == ("motion", 7, 24.0, 96, 4.0)
    assert blue.size == (256, 256)
    assert blue.output_size == (512, 512)
    assert blue.window == WindowSpec(length=24, overlap=4, weighting="cosine", mode="independent")
    assert blue.upscale == UpscaleSpec(factor=2.0, method="lanczos")
    assert blue.motion == MotionSpec()
    assert (blue.formats, blue.gpus, blue.fit, blue.background, blue.loop) == (("mp4",), "auto", "cover", "#ffffff", True)
    assert items["mug-red"].mask == root / "images" / "mask.png"
    assert items["mug-red"].frames == 48

    # catalog rows: mapped cells override defaults; null cells mean "not set"
    assert (items["sku-1"].seed, items["sku-1"].prompt, items["sku-1"].loop) == (1, "a mug", True)
    assert (items["sku-2"].seed, items["sku-2"].prompt, items["sku-2"].loop) == (7, "", False)
    assert items["sku-2"].image == root / "images" / "mug-red.png"
    assert items["sku-3"].image == root / "images" / "mug-blue.png"  # from defaults


def test_csv_catalog_cells_are_text_coerced_by_the_item_model(project: Any, base: dict[str, Any]) -> None:
    (project.root / "catalog.csv").write_text(
        "sku,image,seed,loop,fps,gpus\n"
        "00123,images/mug-blue.png,5,true,30,auto\n"
        "00124,images/mug-red.png,,false,,0.5\n",
        encoding="utf-8",
    )
    base["items"] = []
    base["defaults"]["frames"] = 60
    del base["defaults"]["duration"]
    base["catalog"] = {
        "path": "catalog.csv",
        "columns": {"id": "sku", "image": "image", "seed": "seed", "loop": "loop", "fps": "fps", "gpus": "gpus"},
    }

    job = load_manifest(project.write(base))

    first, second = job.items
    assert (first.id, first.seed, first.loop, first.fps, first.gpus) == ("00123", 5, True, 30.0, "auto")
    assert (second.id, second.seed, second.loop, second.fps, second.gpus) == ("00124", 7, False, 24.0, 0.5)


def test_nested_sections_merge_key_by_key(project: Any, base: dict[str, Any]) -> None:
    base["defaults"]["motion"] = {"amplitude": 0.05, "max_hz": 2.0}
    base["defaults"]["upscale"] = {"method": "bicubic"}
    base["items"] = [
        {"id": "a", "image": "images/mug-blue.png", "motion": {"zoom": 0.1}, "window": {"overlap": 8}},
        {"id": "b", "image": "images/mug-blue.png", "motion": {"max_hz": 1.0}, "upscale": {"factor": 1.5}},
    ]
    items = _by_id(load_manifest(project.write(base)))

    assert items["a"].motion == MotionSpec(amplitude=0.05, max_hz=2.0, zoom=0.1)
    assert items["a"].window == WindowSpec(length=16, overlap=8)
    assert items["a"].upscale == UpscaleSpec(factor=1.0, method="bicubic")
    assert items["b"].motion == MotionSpec(amplitude=0.05, max_hz=1.0)
    assert items["b"].upscale == UpscaleSpec(factor=1.5, method="bicubic")
    assert items["b"].output_size == (384, 384)


@pytest.mark.parametrize(
    ("defaults_timing", "item_timing", "expected_frames"),
    [
        ({"duration": 4.0}, {}, 96),  # defaults' duration at defaults' fps
        ({"duration": 4.0}, {"fps": 30}, 120),  # defaults' duration at the item's fps
        ({"duration": 4.0}, {"frames": 10}, 10),  # the item's frames win over defaults' duration
        ({"frames": 10}, {"duration": 2.0}, 48),  # the item's duration wins over defaults' frames
        ({"frames": 10}, {}, 10),
        ({}, {}, 48),  # neither anywhere
        ({}, {"duration": 0.5, "fps": 12}, 6),
        ({"duration": 0.1}, {"fps": 30}, 3),  # 0.1 × 30 = 3.0000000000000004: whole within 1e-6
    ],
)
def test_frames_or_duration_precedence(
    project: Any, base: dict[str, Any], defaults_timing: dict[str, Any], item_timing: dict[str, Any], expected_frames: int
) -> None:
    base["defaults"] = {"fps": 24, **defaults_timing}
    base["items"] = [{"id": "a", "image": "images/mug-blue.png", **item_timing}]
    (item,) = load_manifest(project.write(base)).items
    assert item.frames == expected_frames


def test_item_null_mask_overrides_defaults_mask(project: Any, base: dict[str, Any]) -> None:
    base["defaults"]["mask"] = "images/mask.png"
    base["items"] = [
        {"id": "masked", "image": "images/mug-blue.png"},
        {"id": "free", "image": "images/mug-blue.png", "mask": None},
    ]
    items = _by_id(load_manifest(project.write(base)))
    assert items["masked"].mask == project.root.resolve() / "images" / "mask.png"
    assert items["free"].mask is None


def test_params_are_json_and_exclude_identity(project: Any, base: dict[str, Any]) -> None:
    item = load_manifest(project.write(base)).items[1]
    params = item.params()
    assert json.loads(json.dumps(params)) == params
    assert "id" not in params and "source" not in params
    assert "image" not in params and "mask" not in params  # inputs enter keys by their bytes' digests
    assert params["size"] == [256, 256]
    assert params["window"] == {"length": 16, "overlap": 4, "weighting": "cosine", "mode": "independent"}
    # a motion item carries no diffusers parameters; its loop starts at the still (loop_start first: not keyed)
    assert set(params) == set(ItemSpec.model_fields) - {"id", "source", "image", "mask", "model", "steps", "guidance",
                                                        "loop_start"}


def test_resolved_models_are_frozen_and_hashable(project: Any, base: dict[str, Any]) -> None:
    item = load_manifest(project.write(base)).items[0]
    with pytest.raises(Exception):
        item.seed = 3  # type: ignore[misc]
    assert hash(item) == hash(item.model_copy())


def test_output_override_may_leave_the_manifest_folder(project: Any, base: dict[str, Any], tmp_path: Path) -> None:
    job = load_manifest(project.write(base), output=tmp_path / "elsewhere")
    assert job.output == (tmp_path / "elsewhere").resolve()


def test_settings_limits_apply(project: Any, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    path = project.write(base)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, settings=Settings(max_frames=50))
    assert [p.location for p in caught.value.problems] == ["items[0].frames"]

    monkeypatch.setenv("FRAMEFOLD_MAX_SIDE", "128")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert [p.location for p in caught.value.problems] == ["defaults.size"]  # once, where it is written


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEFOLD_MAX_FRAMES", "100")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    settings = Settings()
    assert (settings.max_frames, settings.ray_address) == (100, "ray://head:10001")
    monkeypatch.setenv("FRAMEFOLD_RAY_ADDRESS", "auto")
    assert Settings().ray_address == "auto"
    assert all(field.description for field in Settings.model_fields.values())


def test_error_string_names_file_location_and_item(tmp_path: Path) -> None:
    error = ManifestError(
        tmp_path / "m.yaml",
        [
            Problem("items[2].window.overlap", "overlap must be < length (16), got 16", "mug"),
            Problem("catalog row 17 (item 'sku-9').image", "file not found: /x", "sku-9"),
            Problem("", "invalid YAML at line 1, column 2: oops"),
        ],
    )
    assert str(error).splitlines() == [
        f"{tmp_path / 'm.yaml'}: items[2].window.overlap (item 'mug'): overlap must be < length (16), got 16",
        f"{tmp_path / 'm.yaml'}: catalog row 17 (item 'sku-9').image: file not found: /x",
        f"{tmp_path / 'm.yaml'}: invalid YAML at line 1, column 2: oops",
    ]
    clone = pickle.loads(pickle.dumps(error))  # crosses Ray / Prefect process boundaries
    assert (clone.file, clone.problems) == (error.file, error.problems)


def test_json_schema_export(project: Any, base: dict[str, Any]) -> None:
    schema = manifest_json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    assert schema["title"] == "framefold manifest"
    assert "$id" not in text
    assert set(schema["properties"]) == {"version", "name", "output", "defaults", "items", "catalog", "provenance"}
    assert set(schema["required"]) == {"version", "name", "output"}
    assert schema["additionalProperties"] is False

    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    assert list(validator.iter_errors(base)) == []
    base["defaults"]["windw"] = {}
    assert list(validator.iter_errors(base)) != []


def test_every_manifest_field_is_described() -> None:
    from manifests.items import ItemEntry
    from manifests.schema import CatalogSpec, Manifest
    from manifests.sections import MotionPatch, UpscalePatch, WindowPatch

    for model in (Manifest, ItemEntry, WindowPatch, UpscalePatch, MotionPatch, CatalogSpec, ItemSpec, WindowSpec):
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert undocumented == [], model.__name__
