"""Scheduled retraining: a CronWorkflow running the tuning DAG for one workspace.

Safe by construction: unchanged data skips training, a worse adapter is never pushed or deployed
(evaluate gates both), and `concurrencyPolicy: Forbid` plus the workspace mutex keep runs from overlapping.

Argo versions: the spec uses `schedules:` (a list), which Argo Workflows reads from v3.6 on and which
v4 requires (the singular `schedule:` is gone from its CRD); Argo < 3.6 ignores `schedules:` and would
never run the CronWorkflow. The workspace mutex uses `mutexes:`, also v3.6+. So: Argo ≥ 3.6.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hera.workflows import CronWorkflow

from kairo.cluster import ClusterConfig
from kairo.pipelines.plan import workspace_plan
from kairo.pipelines.tuning import build
from kairo.pipelines.workflows import workspace_labels
from kairo.problems import InvalidInput, Problem
from kairo.spec import Workspace

# The pattern Argo's CRD checks each schedule against.
CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every\s+([0-9]+(ns|us|µs|ms|s|m|h))+"
                  r"|([A-Za-z0-9*,/?-]+\s+){4}[A-Za-z0-9*,/?-]+)$")
# Argo names the workflows it starts NAME-<unix time>: the name must leave room for that.
MAX_NAME = 52
# A run the controller missed (it was down) still starts within this long of its time.
STARTING_DEADLINE_SECONDS = 3600


def build_cron_workflow(
    workspace: Workspace,
    cluster: ClusterConfig,
    schedule: str,
    timezone: str | None = None,
    *,
    config_name: str | None = None,
    force: bool = False,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A CronWorkflow retraining `workspace` on `schedule` (cron syntax, in `timezone`, default the controller's)."""
    check_schedule(schedule, timezone)
    plan = workspace_plan(workspace, cluster, namespace=namespace, config_name=config_name, force=force)
    labels = workspace_labels(plan)
    cron = build(
        plan, CronWorkflow, labels,
        name=workspace.name[:MAX_NAME].rstrip("-"),
        namespace=plan.namespace,
        labels=labels,
        annotations={"workflows.argoproj.io/title": f"Retrain {workspace.name} on '{schedule}'",
                     "workflows.argoproj.io/description": f"{plan.title}; deployed only when better"},
        schedules=[schedule],
        timezone=timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=STARTING_DEADLINE_SECONDS,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=3,
    )
    # Hera has no field for the CronWorkflow's own workflowMetadata: the labels every run it starts carries.
    cron["spec"]["workflowMetadata"] = {"labels": labels}
    return cron


def check_schedule(schedule: str, timezone: str | None) -> None:
    """InvalidInput naming the schedule or time zone when Argo would refuse them."""
    problems = []
    if not CRON.match(schedule.strip()):
        problems.append(Problem("schedule", f"'{schedule}' — five cron fields (minute hour day month weekday), e.g. "
                                          "'0 3 * * 1' for Mondays at 03:00, or @daily / @every 12h"))
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("timezone", f"'{timezone}' — an IANA time zone such as Europe/Paris or UTC"))
    if problems:
        raise InvalidInput(problems)
