"""`kairo run FILE --local`: the very Workflow `kairo render` prints, executed on this machine."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from kairo.cluster import ClusterConfig
from kairo.commands._common import add_workspace_args, cluster_from, load_from_args
from kairo.local.mounts import LocalObjects, Unsupported
from kairo.local.runner import LocalRunner
from kairo.local.tasks import RunResult, TaskRun
from kairo.local.view import make_view
from kairo.presets import HERE as PRESETS_DIR
from kairo.problems import InvalidInput, Problem
from kairo.training.config import DEFAULT_TEMPLATES


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run a workspace's workflow on this machine (--local)")
    add_workspace_args(parser)
    parser.add_argument("--local", action="store_true", required=True,
                        help="run here, without a cluster (the only mode: clusters run `kairo submit`)")
    parser.add_argument("--workdir", metavar="DIR", help="run directory (default .kairo/runs/WORKSPACE)")
    parser.add_argument("--keep-serving", action="store_true", help="leave the inference server running at the end")
    parser.add_argument("--secret", action="append", default=[], metavar="NAME=DIR",
                        help="a folder standing for a Kubernetes Secret the workflow mounts (repeatable)")
    parser.add_argument("--pvc", action="append", default=[], metavar="NAME=DIR",
                        help="a folder standing for the PersistentVolumeClaim NAME (repeatable; made when missing; "
                             "default: RUN_DIR/volumes/pvc/NAME)")
    parser.add_argument("--force", action="store_true", help="train even when the dataset is unchanged")
    parser.add_argument("--parallelism", type=int, default=3, help="tasks run at once (default 3)")
    parser.add_argument("--ask", metavar="QUESTION", help="when the run succeeds, ask the served model this (/chat)")
    parser.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
    parser.add_argument("--containers", action="store_true",
                        help="run each task in the image its template names, with Podman, as Argo's executor runs "
                             "it (uid 10001, read-only root; build the images with `make images-local`)")
    parser.add_argument("--images", metavar="REPOSITORY", default="localhost/kairo",
                        help="with --containers: where kairo's step images are (default localhost/kairo, what "
                             "`make images-local` tags)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kairo.pipelines import render_objects

    cluster = cluster_from(args, local=True)
    workspace, wfile, _ = load_from_args(args, cluster)
    run_dir = Path(args.workdir or Path(".kairo") / "runs" / workspace.name).resolve()
    objects = render_objects(wfile, workspace, cluster, "workflow", config_file=args.config, force=args.force)
    workflow = objects[-1]
    workflow["metadata"]["name"] = f"{workspace.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    local_objects = LocalObjects.from_documents(_chart_defaults(cluster) + objects[:-1], _secrets(args.secret),
                                                _claims(args.pvc, workflow))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "workflow.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    env = {"KAIRO_KEEP_SERVING": "1"} if args.keep_serving else {}
    view = make_view(False if args.plain else None)
    answers: dict[str, str] = {}

    def ask(tasks: dict[str, TaskRun]) -> None:
        if args.ask:
            url = next((t.outputs.get("service-url") for t in tasks.values() if t.outputs.get("service-url")), "")
            answers["question"], answers["answer"] = args.ask, _ask(url, args.ask)

    print(f"kairo: running {workflow['metadata']['name']} in {run_dir}", file=sys.stderr)
    try:
        runner = _runner(args)(workflow, run_dir, local_objects, env=env, parallelism=args.parallelism,
                               on_change=view.changed, before_exit=ask)
    except Unsupported as err:
        raise InvalidInput([Problem("workflow", str(err))], wfile.source) from err
    with view:
        result = runner.run()
    return _report(result, answers, workflow)


def _runner(args: argparse.Namespace):
    """The local runner: tasks as processes, or (--containers) each in its image."""
    if not args.containers:
        return LocalRunner
    from functools import partial

    from kairo.images import podman_problem
    from kairo.local.containers import ContainerRunner

    problem = podman_problem()
    if problem:
        raise InvalidInput([Problem("--containers", f"needs Podman: {problem}")])
    return partial(ContainerRunner, repository=args.images)


def _report(result: RunResult, answers: dict[str, str], workflow: dict) -> int:
    urls = [t.outputs["service-url"] for t in result.tasks.values() if t.outputs.get("service-url")]
    if result.status == "Succeeded":
        print(f"kairo: the run succeeded ({result.run_dir})", file=sys.stderr)
        for name, value in _global_outputs(result, workflow):
            if name != "service-url":  # said just below, in words
                print(f"kairo: {name}: {value}", file=sys.stderr)
        if urls:
            print(f"kairo: the model was served at {urls[0]}", file=sys.stderr)
        if answers:
            print(f"\nQ: {answers['question']}\nA: {answers['answer']}")
        return 0
    for task in result.failed:
        print(f"\nkairo: task '{task.name}' failed: {task.message}\n--- end of its log ({task.log_path}) ---",
              file=sys.stderr)
        print(task.log_tail(25), file=sys.stderr)
    if result.exit_task and result.exit_task.state != "Succeeded":
        print(f"kairo: the exit handler also failed: {result.exit_task.message}", file=sys.stderr)
    names = ", ".join(t.name for t in result.failed) or "the exit handler"
    print(f"kairo: the run failed in {names}", file=sys.stderr)
    return 1


def _global_outputs(result: RunResult, workflow: dict) -> list[tuple[str, str]]:
    """The workflow's outputs as the Argo UI lists them (`globalName`): dataset, evaluation, adapter, service.

    That is where a user reads why nothing was deployed ("kept the current adapter (eval loss X vs Y)").
    """
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    found = []
    for task in result.tasks.values():
        for param in ((templates[task.template].get("outputs") or {}).get("parameters") or []):
            value = task.outputs.get(param["name"], "") if task.state == "Succeeded" else ""
            if param.get("globalName") and value:
                found.append((param["globalName"], value))
    return found


def _ask(url: str, question: str) -> str:
    """POST Kaito's /chat body to the served model and return its answer.

    The question goes as chat `messages` (which Kaito's /chat also takes), so the model's chat template
    frames it as in training; a bare `prompt` is raw text completion.
    """
    if not url:
        return "(no service URL: nothing was deployed in this run)"
    body = json.dumps({"messages": [{"role": "user", "content": question}],
                       "generate_kwargs": {"max_new_tokens": 48, "do_sample": False}}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/chat", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return str(json.load(response).get("Result", "")).strip()
    except (urllib.error.URLError, TimeoutError, ValueError) as err:
        return f"(the server did not answer: {err})"


def _chart_defaults(cluster: ClusterConfig) -> list[dict]:
    """The ConfigMaps the chart installs in a cluster: Kaito's tuning templates and the cluster config."""
    maps = [_config_map(name, {"training_config.yaml": (PRESETS_DIR / "training" / f"{name}.yaml").read_text()})
            for name in DEFAULT_TEMPLATES.values()]
    maps.append(_config_map("kairo-cluster", {"cluster.yaml": yaml.safe_dump(cluster.model_dump(mode="json"))}))
    return maps


def _config_map(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _secrets(pairs: list[str]) -> dict[str, Path]:
    found = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not Path(folder).is_dir():
            raise InvalidInput([Problem("--secret", f"'{pair}' — expected NAME=FOLDER with an existing folder")])
        found[name] = Path(folder).resolve()
    return found


def _claims(pairs: list[str], workflow: dict) -> dict[str, Path]:
    """`--pvc NAME=DIR`: claims of the workflow's volumes mapped onto the user's folders (made when missing)."""
    known = sorted(v["persistentVolumeClaim"]["claimName"] for v in workflow["spec"].get("volumes") or []
                   if "persistentVolumeClaim" in v)
    found = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise InvalidInput([Problem("--pvc", f"'{pair}' — expected NAME=FOLDER")])
        if name not in known:
            mounted = ", ".join(known) or "none"
            raise InvalidInput([Problem("--pvc", f"'{name}' is not a claim this workspace mounts — it mounts: {mounted}")])
        path = Path(folder).resolve()
        if path.exists() and not path.is_dir():
            raise InvalidInput([Problem("--pvc", f"'{pair}' — {path} is a file, not a folder")])
        path.mkdir(parents=True, exist_ok=True)
        found[name] = path
    return found
