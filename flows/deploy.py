"""Prefect deployments of the ``framefold-run`` flow, declared once.

Three uses of the same flow (:func:`flows.run.run_manifest`), told apart by schedule and
parameters:

- ``framefold-run/nightly`` — regeneration every night (cron, in a timezone). Deployment
  concurrency limit 1 with collision strategy ``CANCEL_NEW``: a run that would overlap a
  running one is cancelled by the server instead of stacking up behind it.
- ``framefold-run/marketing-loops`` — a weekly batch: one cron schedule *per manifest*,
  each carrying its own ``manifest`` parameter (Prefect per-schedule parameters).
  Concurrency limit 1 with ``ENQUEUE``: schedules that fire together run one after
  another instead of competing for the machine.
- ``framefold-run/catalog`` — on demand only (no schedule): ``prefect deployment run
  framefold-run/catalog`` or the UI's "Run", optionally with another ``manifest``.

Schedules are evaluated by a Prefect server (``PREFECT_API_URL``); a temporary local
server never creates scheduled runs. ``framefold serve`` runs the deployments from one
long-lived process (``prefect.serve``); ``framefold deploy --pool P`` registers the same
deployments on a process work pool, for ``prefect worker start --pool P``.

Entrypoints are module paths (``flows.run.run_manifest``): the process that runs a flow
imports the installed package, wherever it was started. Manifest paths are made
absolute when the deployments are built, for the same reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = [
    "CATALOG", "DEFAULT_TIMEZONE", "LOOPS", "LOOPS_CRON", "NIGHTLY", "NIGHTLY_CRON",
    "ScheduleError", "check_schedules", "default_manifests", "deployments",
]

NIGHTLY, LOOPS, CATALOG = "nightly", "marketing-loops", "catalog"  # deployment names
NIGHTLY_CRON = "0 2 * * *"  # every day at 02:00
LOOPS_CRON = "0 5 * * 1"  # Mondays at 05:00
DEFAULT_TIMEZONE = "Europe/Berlin"

EXAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "examples"
# Where each deployment's manifest comes from when no argument is given:
# (environment variable, default). FRAMEFOLD_LOOPS_MANIFESTS may list several
# manifests separated by os.pathsep (':' on Linux), one weekly schedule each.
ENV = {
    NIGHTLY: ("FRAMEFOLD_NIGHTLY_MANIFEST", EXAMPLES / "nightly.yaml"),
    LOOPS: ("FRAMEFOLD_LOOPS_MANIFESTS", EXAMPLES / "loops.yaml"),
    CATALOG: ("FRAMEFOLD_CATALOG_MANIFEST", EXAMPLES / "catalog.yaml"),
}
TIMEZONE_ENV = "FRAMEFOLD_SCHEDULE_TIMEZONE"


class ScheduleError(ValueError):
    """A cron expression or timezone that Prefect cannot schedule; ``field`` names the argument."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def default_manifests(environ: dict[str, str] | None = None) -> dict[str, list[Path]]:
    """Manifests per deployment from the environment (see ``ENV``), else the examples."""
    environ = os.environ if environ is None else environ
    found = {}
    for name, (var, default) in ENV.items():
        value = environ.get(var, "").strip()
        paths = [Path(p) for p in value.split(os.pathsep) if p.strip()] if value else [default]
        found[name] = paths if name == LOOPS else paths[:1]
    return found


def deployments(
    *,
    nightly: str | Path,
    loops: Sequence[str | Path],
    catalog: str | Path,
    timezone: str = DEFAULT_TIMEZONE,
    nightly_cron: str = NIGHTLY_CRON,
    loops_cron: str = LOOPS_CRON,
) -> list[RunnerDeployment]:
    """The three deployments (nightly, marketing-loops, catalog), ready for
    ``prefect.serve`` or ``prefect.deploy``. Raises :class:`ScheduleError` for a cron
    expression or timezone Prefect cannot use, ``ValueError`` for an empty ``loops``."""
    # Imported here: the CLI reads this module's names without paying for Prefect, Ray and torch.
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.run import run_manifest

    # 1. Check inputs: the server would only reject them later, one deployment at a time.
    check_schedules(timezone=timezone, nightly_cron=nightly_cron, loops_cron=loops_cron)
    if not loops:
        raise ValueError("loops: at least one manifest is needed for the weekly schedule")
    nightly, catalog = _absolute(nightly), _absolute(catalog)
    loops = [_absolute(p) for p in loops]

    # 2. Declare.
    common = dict(entrypoint_type=EntrypointType.MODULE_PATH, enforce_parameter_schema=True)
    return [
        run_manifest.to_deployment(
            name=NIGHTLY,
            description="Nightly regeneration: items whose inputs, parameters and backend are unchanged "
            "are skipped. An overlapping run is cancelled, never queued.",
            schedules=[Cron(nightly_cron, timezone=timezone, slug="nightly")],
            parameters={"manifest": nightly},
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=["framefold", NIGHTLY],
            **common,
        ),
        run_manifest.to_deployment(
            name=LOOPS,
            description="Weekly marketing-loop batch: one schedule per manifest; runs that fire "
            "together wait for each other.",
            schedules=[
                Cron(loops_cron, timezone=timezone, slug=slug, parameters={"manifest": path})
                for slug, path in zip(_slugs(loops), loops)
            ],
            parameters={"manifest": loops[0]},  # for a run started by hand
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
            ),
            tags=["framefold", LOOPS],
            **common,
        ),
        run_manifest.to_deployment(
            name=CATALOG,
            description="On-demand catalog run (no schedule); pass `manifest` to run another catalog.",
            parameters={"manifest": catalog},
            tags=["framefold", CATALOG],
            **common,
        ),
    ]


def check_schedules(*, timezone: str, nightly_cron: str, loops_cron: str) -> None:
    """Raise :class:`ScheduleError` naming the first argument Prefect could not schedule."""
    _check_timezone(timezone)
    _check_cron("nightly_cron", nightly_cron)
    _check_cron("loops_cron", loops_cron)


def _absolute(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _slugs(paths: Sequence[str]) -> list[str]:
    """``weekly-<file stem>``, numbered when two manifests share a stem."""
    stems = [Path(p).stem for p in paths]
    return [
        f"weekly-{stem}" if stems.count(stem) == 1 else f"weekly-{stem}-{stems[:i + 1].count(stem)}"
        for i, stem in enumerate(stems)
    ]


def _check_timezone(timezone: str) -> None:
    # the validation the server applies to a cron schedule's timezone (Prefect's own tz list)
    from prefect.client.schemas.schedules import CronSchedule

    try:
        if not timezone:
            raise ValueError("empty")
        CronSchedule(cron=NIGHTLY_CRON, timezone=timezone)
    except ValueError:
        raise ScheduleError(
            "timezone", f"expected an IANA timezone name such as 'Europe/Berlin' or 'UTC', got {timezone!r}"
        ) from None


def _check_cron(field: str, expression: str) -> None:
    from prefect.schedules import Cron

    try:
        Cron(expression)
    except ValueError:
        raise ScheduleError(
            field, f"expected a cron expression such as '0 2 * * *' (minute hour day month weekday), got {expression!r}"
        ) from None
