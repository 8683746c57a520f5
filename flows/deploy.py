"""Prefect deployments of the ``framefold-run`` flow: one per manifest, named by the user.

``framefold deploy MANIFEST --name NAME --cron "0 2 * * *"`` registers
``framefold-run/NAME`` on the Prefect server of ``PREFECT_API_URL`` (run by a process
worker of a work pool); ``framefold serve`` takes the same arguments and runs the
deployment from its own process (``prefect.serve``). Register as many as needed, one per
manifest and schedule; nothing is scheduled unless asked. Cron times are in UTC unless
``--timezone`` names an IANA zone (daylight saving then applies).

Each deployment has a concurrency limit of 1 with collision strategy ``CANCEL_NEW``: a run
that would overlap a running one of the same deployment is cancelled by the server instead
of stacking up behind it. Without ``--cron`` the deployment runs on demand only
(``prefect deployment run framefold-run/NAME``).

Entrypoints are module paths (``flows.run.run_manifest``): the process that runs a flow
imports the installed package, wherever it was started. Manifest and output paths are made
absolute when the deployment is built, for the same reason (URLs are kept as they are).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = ["DEFAULT_TIMEZONE", "FLOW", "ScheduleError", "check_schedule", "deployment"]

FLOW = "framefold-run"
DEFAULT_TIMEZONE = "UTC"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ScheduleError(ValueError):
    """An argument Prefect cannot schedule; ``field`` names it (name, cron, timezone)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def deployment(
    manifest: str | Path,
    *,
    name: str,
    cron: str | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    output: str | Path | None = None,
) -> RunnerDeployment:
    """The deployment ``framefold-run/NAME`` running ``manifest`` (on ``cron`` in
    ``timezone``, or on demand when ``cron`` is None), ready for ``prefect.serve`` or
    ``prefect.deploy``. Raises :class:`ScheduleError` for a name, cron expression or
    timezone Prefect cannot use."""
    # Imported here: the CLI reads this module's names without paying for Prefect, Ray and torch.
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.run import run_manifest

    # 1. Check inputs: the server would only reject them later.
    check_schedule(name=name, cron=cron, timezone=timezone)
    parameters = {"manifest": _absolute(manifest)}
    if output is not None:
        parameters["output"] = _absolute(output)

    # 2. Declare.
    when = f"cron {cron!r} ({timezone})" if cron else "on demand"
    return run_manifest.to_deployment(
        name=name,
        description=f"framefold run of {parameters['manifest']}, {when}. Items whose inputs, parameters and "
        "model are unchanged are skipped; a run that would overlap a running one is cancelled.",
        schedules=[Cron(cron, timezone=timezone, slug=name)] if cron else [],
        parameters=parameters,
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        tags=["framefold"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        enforce_parameter_schema=True,
    )


def check_schedule(*, name: str, cron: str | None, timezone: str) -> None:
    """Raise :class:`ScheduleError` naming the first argument Prefect could not use."""
    if not _NAME.match(name or ""):
        raise ScheduleError("name", "expected letters, digits, '.', '_' or '-' (at most 100, starting with a "
                            f"letter or digit), got {name!r}")
    _check_timezone(timezone)
    if cron is not None:
        _check_cron(cron)


def _absolute(path: str | Path) -> str:
    text = str(path)
    if "://" in text:  # a store URL (s3://…): the same from every machine
        return text
    return str(Path(text).expanduser().resolve())


def _check_timezone(timezone: str) -> None:
    # the validation the server applies to a cron schedule's timezone (Prefect's own tz list)
    from prefect.client.schemas.schedules import CronSchedule

    try:
        if not timezone:
            raise ValueError("empty")
        CronSchedule(cron="0 2 * * *", timezone=timezone)
    except ValueError:
        raise ScheduleError(
            "timezone", f"expected an IANA timezone name such as 'UTC' or 'Europe/Berlin', got {timezone!r}"
        ) from None


def _check_cron(expression: str) -> None:
    from prefect.schedules import Cron

    try:
        Cron(expression)
    except ValueError:
        raise ScheduleError(
            "cron", f"expected a cron expression such as '0 2 * * *' (minute hour day month weekday), got {expression!r}"
        ) from None
