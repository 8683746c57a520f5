"""Cross-field rules of a resolved item that need more than one section: model family
constraints, output sizes, rendition crops. Each returns ``[(field path, message), ...]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .families import FAMILIES, FREENOISE_WEIGHTINGS
from .paths import FAMILY_PIPELINES, model_index, model_tasks, pipeline_family, two_experts, variant_only

if TYPE_CHECKING:
    from .items import ItemSpec

MIN_RENDITION_SIDE = 16


def crop_box(size: tuple[int, int], aspect: str) -> tuple[int, int, int, int]:
    """The largest centred box of ``aspect`` ("W:H", or "native": the whole frame) inside
    ``size`` (width, height), with even sides (yuv420p): ``(x, y, width, height)``.

    >>> crop_box((1280, 720), "9:16"), crop_box((1280, 720), "1:1"), crop_box((512, 512), "16:9")
    ((438, 0, 404, 720), (280, 0, 720, 720), (0, 112, 512, 288))
    """
    width, height = size
    if aspect == "native":
        return 0, 0, width, height
    a, b = (int(v) for v in aspect.split(":"))
    if width * b > height * a:  # frame wider than the aspect: keep the height
        w, h = height * a / b, height
    else:
        w, h = width, width * b / a
    w, h = max(2, int(w) // 2 * 2), max(2, int(h) // 2 * 2)
    return (width - w) // 2, (height - h) // 2, w, h



def aspect_problems(item: ItemSpec) -> list[tuple[str, str]]:
    """Every aspect's crop of the output frames must keep both sides >= 16 pixels."""
    problems = []
    for n, aspect in enumerate(item.aspects):
        _, _, w, h = crop_box(item.output_size, aspect)
        if min(w, h) < MIN_RENDITION_SIDE:
            problems.append(("aspects", f"aspects[{n}]: {aspect} cut from the {item.output_size[0]}x{item.output_size[1]} "
                             f"output is {w}x{h}; each side must be >= {MIN_RENDITION_SIDE}: use a less extreme ratio "
                             "or a larger size"))
    return problems


def diffusers_problems(item: ItemSpec) -> list[tuple[str, str]]:
    """An item for a diffusers family: every window must be a frame count and size the family accepts."""
    if item.model is None:
        return [("model", "backend 'diffusers' needs model: {family, path}")]
    family = FAMILIES[item.model.family]
    problems: list[tuple[str, str]] = []
    holds = pipeline_family(Path(item.model.path))
    if holds is not None and holds[0] != family.name:
        return [("model.family", f"the model at {item.model.path} is a {holds[0]} model ({holds[1]} in its "
                                 f"model_index.json): set model.family: {holds[0]}, or point model.path at a "
                                 f"{family.name} model")]
    if holds is None and isinstance(named := model_index(Path(item.model.path)).get("_class_name"), str):
        return [("model.path", f"the model at {item.model.path} is a {named} (its model_index.json), which none of "
                               f"framefold's model families runs: point model.path at a {family.name} model (a "
                               f"{FAMILY_PIPELINES[family.name]}… pipeline saved with save_pretrained)")]
    if item.model.variant is None and (variants := variant_only(Path(item.model.path))):
        names = sorted(set(variants.values()))
        problems.append(("model.variant", f"the model at {item.model.path} holds only {' / '.join(names)} weights for "
                                          f"{', '.join(f'{k}/' for k in sorted(variants))}: set model.variant: "
                                          f"{names[0]}"))
    if item.task not in family.tasks:
        need = "set image: PATH (image-to-video)" if "i2v" in family.tasks else "remove image (text-to-video)"
        problems.append(("image", f"model family {family.name!r} does {', '.join(family.tasks)} only; {need}"))
    elif (can := model_tasks(Path(item.model.path), family.name)) is not None and item.task not in can[0]:
        if item.task == "i2v":
            problems.append(("image", f"the {family.name} model at {item.model.path} is text-to-video ({can[1]}): "
                                      "it takes no image; remove image, or use an image-to-video model"))
        else:
            problems.append(("image", f"the {family.name} model at {item.model.path} is image-to-video ({can[1]}): "
                                      "set image: PATH, or use a text-to-video model"))
    bad = [s for s in item.size if s % family.size_multiple or s < family.min_side]
    if bad:
        problems.append(
            ("size", f"family {family.name!r} needs width and height multiples of {family.size_multiple} "
                     f"(>= {family.min_side}), got {list(item.size)}")
        )
    if item.window.mode not in family.modes:
        problems.append(("window.mode", f"family {family.name!r} supports window.mode {', '.join(family.modes)}, "
                                        f"got {item.window.mode!r}"))
    length, overlap = item.window.length, item.window.overlap
    single = item.frames <= length  # one window of all the frames
    window_frames = item.frames if single else length
    if not family.window_frames_ok(window_frames):
        where = "frames" if single else "window.length"
        problems.append(
            (where, f"family {family.name!r} generates windows of {family.frame_rule()}, got {window_frames}")
        )
    if not single and family.temporal > 1:
        if (length - overlap) % family.temporal:
            problems.append(
                ("window.overlap", f"family {family.name!r} compresses time {family.temporal}×: window.length - "
                                   f"window.overlap must be a multiple of {family.temporal}, got {length - overlap}")
            )
        if (item.frames - length) % family.temporal:
            problems.append(
                ("frames", f"family {family.name!r} compresses time {family.temporal}×: frames - window.length "
                           f"must be a multiple of {family.temporal} so the last window starts on a latent frame, "
                           f"got {item.frames} - {length}")
            )
    if item.window.mode == "codenoise" and two_experts(Path(item.model.path)):
        problems.append(("window.mode", f"codenoise co-denoises with one transformer; the model at {item.model.path} "
                                        "switches between two (transformer_2 in its model_index.json): "
                                        "use window.mode independent"))
    if item.window.mode == "codenoise" and item.frames > length and (item.frames - 1) % family.temporal:
        problems.append(("frames", f"codenoise with family {family.name!r} needs frames = {family.temporal}k+1 "
                                   f"(one latent of the whole clip), got {item.frames}"))
    if item.window.mode == "freenoise":
        if item.loop:
            problems.append(("loop", "freenoise slides its windows over a line of frames; it cannot close a loop: "
                                     "set loop: false, or use window.mode: codenoise"))
        if item.window.weighting not in FREENOISE_WEIGHTINGS:
            problems.append(("window.weighting", f"freenoise weights windows as diffusers does: "
                                                 f"{' or '.join(FREENOISE_WEIGHTINGS)} (diffusers' pyramid), "
                                                 f"not {item.window.weighting!r}"))
    if item.window.mode == "outpaint" and item.task != "i2v":
        problems.append(("window.mode", "outpaint conditions each window on the previous window's frames through the "
                                        "image input: set image: PATH (an image-to-video item)"))
    if item.window.mode == "outpaint" and item.loop:
        problems.append(("loop", "outpaint generates windows one after another from the first; it cannot close a "
                                 "loop: set loop: false, or use window.mode: codenoise (animatediff, wan)"))
    if item.loop and family.temporal > 1:
        problems.append(("loop", f"loop: true needs a family without temporal compression (animatediff, svd), "
                                 f"not {family.name!r}"))
    return problems


def upscale_problems(size: tuple[int, int], factor: float, max_output_side: int) -> list[tuple[str, str]]:
    for side_name, side in zip(("width", "height"), size):
        exact = side * factor
        out = round(exact)
        if abs(exact - out) >= 1e-6:
            return [("upscale.factor", f"{side_name} {side} × factor {factor:g} = {exact:.6g} is not a whole number of pixels")]
        if out % 2:
            return [("upscale.factor", f"{side_name} {side} × factor {factor:g} = {out} is odd; output sides must be even")]
        if out > max_output_side:
            return [
                (
                    "upscale.factor",
                    f"output {side_name} {side} × factor {factor:g} = {out} exceeds max_output_side "
                    f"({max_output_side}, FRAMEFOLD_MAX_OUTPUT_SIDE)",
                )
            ]
    return []

