"""Preflight: the checks of a loaded manifest that need a model or a key, run before any work.

``manifests.load_manifest`` checks everything it can without loading a model library;
``preflight(job)`` finishes the job, and the CLI (``validate``, ``plan``, ``run``) and the
flow call it right after loading:

1. each super-resolution model an item names is read by spandrel (once per file): it must
   be an upscaler, and its scale is the item's ``upscale.factor`` unless the item sets one
   (a factor above the scale is refused: the rest would be plain resampling);
2. the signer's certificate chain and key are read and checked (``tasks.credentials.check``);
3. each ``model.scheduler`` must be a diffusers scheduler class.

Problems are raised as ``manifests.ManifestError`` with the locations the loader uses, so a
bad model or key reads like any other manifest error (exit 2, nothing done).
"""

from __future__ import annotations

import dataclasses
import difflib

from pydantic import ValidationError

from manifests import ItemSpec, Job, ManifestError, Problem, Settings
from manifests.job import SIGNER_LOCATIONS
from manifests.problems import file_order, problems_from

__all__ = ["preflight"]


def preflight(job: Job, *, settings: Settings | None = None) -> Job:
    """`job` with every model upscaler's factor settled; raises ManifestError listing what a
    model or key check found. Imports spandrel or c2pa only when the job needs them."""
    problems: list[Problem] = []
    items = list(job.items)
    if job.upscalers:
        problems += _settle_upscalers(job, items, settings or Settings())
    if job.signer is not None:
        problems += _signer_problems(job)
    problems += _scheduler_problems(items)
    if problems:
        raise ManifestError(job.manifest_path, sorted(dict.fromkeys(problems), key=file_order))
    return dataclasses.replace(job, items=tuple(items))


# --- 1. Model upscalers --------------------------------------------------------------------
def _settle_upscalers(job: Job, items: list[ItemSpec], settings: Settings) -> list[Problem]:
    """Read each upscaler once; replace in `items` each item whose factor is the model's scale."""
    from tasks.superres import UpscalerError, describe  # only manifests with a model upscaler pay for it

    index = {item.id: n for n, item in enumerate(items)}
    scales: dict[object, int | str] = {}  # weights path -> scale, or why it cannot be used
    problems: list[Problem] = []
    for use in job.upscalers:
        item = items[index[use.item_id]]
        path = item.upscale.path
        if path not in scales:
            try:
                scales[path] = describe(path).scale
            except UpscalerError as error:
                scales[path] = str(error)
        scale = scales[path]
        if isinstance(scale, str):
            problems.append(Problem(use.path_at, scale, _item_of(use.path_at, use.item_id)))
        elif use.factor_at is None:  # a ×4 model makes ×4 output unless told otherwise
            data = item.model_dump()
            data["upscale"]["factor"] = float(scale)
            try:
                items[index[use.item_id]] = ItemSpec.model_validate(data, context={"settings": settings})
            except ValidationError as error:
                problems += problems_from(error, use.prefix, model=ItemSpec, item_id=use.item_id)
        elif item.upscale.factor > scale:
            factor = item.upscale.factor
            problems.append(Problem(use.factor_at, (
                f"factor {factor:g} is more than the ×{scale} upscaler makes; the rest would be plain "
                f"resampling — use a model of scale {factor:g} or more, or factor ≤ {scale}"),
                _item_of(use.factor_at, use.item_id)))
    return problems


def _scheduler_problems(items: list[ItemSpec]) -> list[Problem]:
    """``model.scheduler`` must name a diffusers scheduler class (one problem per unknown name)."""
    names = {}
    for item in items:
        if item.model is not None and item.model.scheduler:
            names.setdefault(item.model.scheduler, item.id)
    if not names:
        return []
    import diffusers  # only manifests that replace a scheduler pay for it here

    problems = []
    for name, item_id in names.items():
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(Problem("model.scheduler", f"{name!r} is not a diffusers scheduler; {hint}"
                                                       f"it takes one of {', '.join(known[:8])}, …", item_id))
    return problems


def _item_of(location: str, item_id: str) -> str | None:
    """The item a problem names: none when it is located in defaults (reported once, as the loader does)."""
    return None if location.startswith("defaults.") else item_id


# --- 2. Signer -----------------------------------------------------------------------------
def _signer_problems(job: Job) -> list[Problem]:
    """The certificate and key problems of the job's signer, located where they were set."""
    from tasks.credentials import check  # only runs that sign pay for c2pa

    where = SIGNER_LOCATIONS[job.signer_from or "manifest"]
    return [
        Problem(where.get(message.split(":", 1)[0], where["cert"]), message.split(": ", 1)[-1])
        for message in check(job.signer)
    ]
