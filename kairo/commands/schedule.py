"""`kairo schedule FILE --cron "0 3 * * 1"`: retrain a workspace on a schedule (an Argo CronWorkflow).

Unchanged data skips training, and a new adapter is pushed and deployed only when it beats the deployed
one on the held-out split. `kairo render FILE --kind cronworkflow --schedule …` prints it instead.
"""

from __future__ import annotations

import argparse
import sys

from kairo.commands.render import add_render_args
from kairo.commands.submit import add_target_args, send


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("schedule", help="retrain a workspace on a schedule (an Argo CronWorkflow)")
    add_render_args(parser, file_required=True)
    parser.add_argument("--cron", required=True, metavar="CRON", help="when, in cron syntax, e.g. '0 3 * * 1'")
    parser.add_argument("--timezone", metavar="TZ", help="time zone of the schedule, e.g. Europe/Paris")
    add_target_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kairo.clients.argo import ArgoError
    from kairo.clients.kube import KubeError

    try:
        target, namespace, name = send(args, "cronworkflow", lambda argo, cron: argo.apply_cron_workflow(cron),
                                       schedule=args.cron, timezone=args.timezone)
    except (ArgoError, KubeError) as err:
        print(f"kairo schedule: {err}", file=sys.stderr)
        return 1
    zone = f" ({args.timezone})" if args.timezone else ""
    print(f"cronworkflow {namespace}/{name} scheduled: '{args.cron}'{zone}")
    print(target.link("CronWorkflow", namespace, name))
    return 0
