"""Run a rendered Argo Workflow on this machine: each DAG task's container command as a local process.

Parameters are substituted as Argo substitutes them, `depends`/`dependencies` and `when` are honoured,
independent tasks run in parallel, output parameters are read from their files and passed on,
`retryStrategy` limits and expressions apply, `continueOn` keeps a failed task from failing the run, a
task whose template is a DAG runs that DAG with its inputs, and `onExit` (a container template, or a DAG)
always runs. Only the Argo features kairo's
pipelines use are supported; anything else is refused before a task starts (see `check_supported`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kairo.argo import refuse
from kairo.argo.expr import ExpressionError, evaluate_bool
from kairo.contract import OUTPUTS
from kairo.local import jobset
from kairo.local.mounts import LocalObjects, Mount, PathMap, Unsupported, volume_folder
from kairo.local.policy import (
    backoff_seconds,
    deadline_of,
    descendants,
    kill,
    kill_all,
    last_line,
    should_retry,
)
from kairo.local.support import check_supported
from kairo.local.tasks import DONE, RunResult, TaskRun, dependency_met

_REFERENCE = re.compile(r"{{(.*?)}}")


class LocalRunner:
    """Execute `workflow` (a Workflow manifest) with its DAG; `objects` are the documents it may mount."""

    def __init__(
        self,
        workflow: dict[str, Any],
        run_dir: Path,
        objects: LocalObjects,
        *,
        env: dict[str, str] | None = None,
        parallelism: int = 3,
        on_change: Callable[[TaskRun], None] | None = None,
        before_exit: Callable[[dict[str, TaskRun]], None] | None = None,
    ):
        check_supported(workflow)
        refuse([workflow])  # what a cluster would refuse is refused here too (InvalidInput, exit 2)
        self.workflow = workflow
        self.spec = workflow["spec"]
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        self.run_dir = run_dir
        self.objects = objects
        self.env = env or {}
        self.parallelism = max(1, parallelism)
        self.on_change = on_change or (lambda task: None)
        self.before_exit = before_exit
        self.name = workflow["metadata"].get("name") or workflow["metadata"].get("generateName", "kairo-") + "local"
        self.uid = str(uuid.uuid4())
        self.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.parameters = {p["name"]: str(p.get("value", p.get("default", "")))
                           for p in (self.spec.get("arguments") or {}).get("parameters", [])}
        self.tasks: dict[str, TaskRun] = {}
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    # -- the DAG -------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        entry = self.templates[self.spec["entrypoint"]]
        tasks = {t["name"]: self._task(t) for t in entry["dag"]["tasks"]}
        self.tasks = tasks
        self.run_dir.mkdir(parents=True, exist_ok=True)
        status = self._run_dag(tasks, {})
        if self.before_exit is not None and status == "Succeeded":
            self.before_exit(tasks)
        exit_task, exit_tasks = self._run_exit_handler(status, tasks)
        return RunResult(status, tasks, exit_task, self.run_dir, exit_tasks)

    def _run_dag(self, tasks: dict[str, TaskRun], extra: dict[str, str]) -> str:
        """Run `tasks` to the end (`extra`: variables only the exit handler has); Failed or Succeeded."""
        running: dict[str, threading.Thread] = {}
        try:
            while True:
                for task in tasks.values():
                    if task.state == "Pending":
                        self._decide(task, tasks, extra)
                ready = [t for t in tasks.values() if t.state == "Ready"]
                for task in ready[: max(0, self.parallelism - len(running))]:
                    task.state = "Running"
                    thread = threading.Thread(target=self._execute_safely, args=(task, tasks, extra), daemon=True)
                    running[task.name] = thread
                    thread.start()
                for name in [n for n, th in running.items() if not th.is_alive()]:
                    running.pop(name)
                if all(t.state in DONE for t in tasks.values()) and not running:
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            self._stop_all()
            for task in tasks.values():
                if task.state not in DONE:
                    task.state, task.message = "Error", "interrupted"
        # As in Argo, a task whose continueOn covers its failure does not fail the DAG.
        failed = [t for t in tasks.values() if t.state in ("Failed", "Error") and not t.continues]
        return "Failed" if failed else "Succeeded"

    def _task(self, spec: dict[str, Any], parent: TaskRun | None = None) -> TaskRun:
        depends = spec.get("depends") or " && ".join(spec.get("dependencies") or [])
        args = {p["name"]: str(p.get("value", "")) for p in (spec.get("arguments") or {}).get("parameters", [])}
        continue_on = spec.get("continueOn") or {}
        continues = tuple(state for key, state in (("failed", "Failed"), ("error", "Error")) if continue_on.get(key))
        node = f"{parent.node}.{spec['name']}" if parent else spec["name"]
        return TaskRun(spec["name"], spec["template"], depends, spec.get("when", ""), args, continue_on=continues,
                       node=node, quiet=parent is not None)

    def _decide(self, task: TaskRun, tasks: dict[str, TaskRun], extra: dict[str, str]) -> None:
        """Pending → Ready, Skipped or Omitted once the tasks it depends on are done."""
        names = set(re.findall(r"[A-Za-z0-9][A-Za-z0-9_-]*", re.sub(r"\.(\w+)", "", task.depends)))
        if any(tasks[n].state not in DONE for n in names if n in tasks):
            return
        if task.depends and not evaluate_bool(task.depends, lambda name: dependency_met(name, tasks)):
            self._skip(task, "its dependencies did not succeed", "Omitted")
            return
        if task.when:
            condition = self.substitute(task.when, {**self._scope(task, tasks), **extra}, f"task {task.name} when")
            try:
                run = evaluate_bool(condition, lambda name: name)  # bare words are strings, as in Argo
            except ExpressionError as err:
                raise Unsupported(f"task {task.name}: cannot evaluate when '{task.when}': {err}") from err
            if not run:
                self._skip(task, f"when '{condition}' is false")
                return
        task.state = "Ready"

    def _skip(self, task: TaskRun, message: str, state: str = "Skipped") -> None:
        """A task that does not run: its outputs take their defaults, as Argo ≥ 4.0.7 gives them."""
        outputs = (self.templates[task.template].get("outputs") or {}).get("parameters", [])
        for param in outputs:
            source = param.get("valueFrom") or {}
            if "default" in source:
                task.outputs[param["name"]] = str(source["default"])
        self._set(task, state, message)

    def _run_exit_handler(self, status: str, tasks: dict[str, TaskRun]) -> tuple[TaskRun | None, dict[str, TaskRun]]:
        """onExit: one container template, or a DAG of them; `workflow.status` and `workflow.failures` are set."""
        name = self.spec.get("onExit")
        if not name:
            return None, {}
        failures = [{"displayName": t.name, "message": t.message, "templateName": t.template, "phase": t.state}
                    for t in tasks.values() if t.state in ("Failed", "Error")]
        extra = {"workflow.status": status, "workflow.failures": json.dumps(failures)}
        exit_task = TaskRun("onExit", name, "", "", {})
        template = self.templates[name]
        if "dag" not in template:
            exit_task.state = "Running"
            self._execute(exit_task, extra)
            return exit_task, {}
        exit_tasks = {t["name"]: self._task(t) for t in template["dag"]["tasks"]}
        exit_task.started = time.monotonic()
        exit_status = self._run_dag(exit_tasks, extra)
        exit_task.finished = time.monotonic()
        failed = [t for t in exit_tasks.values() if t.state in ("Failed", "Error") and not t.continues]
        exit_task.state = exit_status
        exit_task.message = "; ".join(f"{t.name}: {t.message}" for t in failed)
        return exit_task, exit_tasks

    # -- one task ------------------------------------------------------------------------------------

    def _execute_safely(self, task: TaskRun, tasks: dict[str, TaskRun] | None = None,
                        extra: dict[str, str] | None = None) -> None:
        try:
            self._execute(task, extra or {}, tasks)
        except Exception as err:  # a task must end in a state, whatever happens in its thread
            task.finished = time.monotonic()
            self._set(task, "Error", f"{type(err).__name__}: {err}")

    def _execute(self, task: TaskRun, extra: dict[str, str], tasks: dict[str, TaskRun] | None = None) -> None:
        template = self.templates[task.template]
        scope = {**self._scope(task, tasks), **extra}
        inputs = {}
        for param in (template.get("inputs") or {}).get("parameters", []):
            value = task.arguments.get(param["name"], param.get("value", param.get("default")))
            if value is None:
                self._set(task, "Error", f"input parameter '{param['name']}' has no value")
                return
            inputs[param["name"]] = self.substitute(str(value), scope, f"task {task.name}")
        scope.update({f"inputs.parameters.{k}": v for k, v in inputs.items()})
        if "dag" in template:
            self._run_nested(task, template, {**extra, **{f"inputs.parameters.{k}": v for k, v in inputs.items()}})
            return
        if "resource" in template:
            self._run_jobset(task, template, scope)
            return
        retry = template.get("retryStrategy") or {}
        limit = int(self.substitute(str(retry.get("limit", 0)), scope, task.name)) if retry else 0
        task.started = time.monotonic()
        self._set(task, "Running", "")
        while True:
            task.attempts += 1
            state, code, message = self._attempt(task, template, {**scope, "retries": str(task.attempts - 1)})
            task.exit_code, task.message = code, message
            if state == "Succeeded" or task.attempts > limit or not should_retry(retry, state, code, message):
                break
            self._set(task, "Retrying", f"attempt {task.attempts} {state.lower()}: {message}")
            time.sleep(backoff_seconds(retry, task.attempts))
        task.finished = time.monotonic()
        if state == "Succeeded":
            self._collect_outputs(task, template)
        self._set(task, state, message)

    def _run_nested(self, task: TaskRun, template: dict[str, Any], scope: dict[str, str]) -> None:
        """A task whose template is a DAG: its tasks run with the template's inputs; its phase is that DAG's."""
        inner = {t["name"]: self._task(t, parent=task) for t in template["dag"]["tasks"]}
        task.started = time.monotonic()
        self._set(task, "Running", "")
        state = self._run_dag(inner, scope)
        task.finished = time.monotonic()
        ended = [t for t in inner.values() if t.state in ("Failed", "Error")]
        task.log_path = next((t.log_path for t in reversed(ended or list(inner.values())) if t.log_path), None)
        notes = [f"{t.name} {t.state.lower()}{' (continueOn)' if t.continues else ''}: {t.message}" for t in ended]
        self._set(task, state, "; ".join(notes))

    def _fresh_root(self, task: TaskRun) -> tuple[Path, Path]:
        """The task's folder and its `root` (the container's file system, made empty for each attempt)."""
        task_dir = self.run_dir / "tasks" / task.node
        root = task_dir / "root"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        return task_dir, root

    def _attempt(self, task: TaskRun, template: dict[str, Any], scope: dict[str, str]) -> tuple[str, int | None, str]:
        task_dir, root = self._fresh_root(task)
        container = template["container"]
        where = f"task {task.name}"
        path_map = self._mounts(template, task_dir, root, where)
        command = [self.substitute(str(c), scope, where) for c in container.get("command", [])]
        args = [self.substitute(str(a), scope, where) for a in container.get("args", [])]
        argv = [path_map.rewrite(a) for a in command + args]
        if not argv:
            raise Unsupported(f"{where}: the container has no command")
        env = {**os.environ, **self.env, "ARGO_PROGRESS_FILE": str(task_dir / "progress"), "KAIRO_LOCAL": "1"}
        if any(c["metadata"]["name"] == "work" for c in self.spec.get("volumeClaimTemplates") or []):
            # Steps that mount no work volume (cleanup) still find the run's state through it.
            env.setdefault("KAIRO_WORKDIR", str(self.run_dir / "volumes" / "work"))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # Tasks share this machine's cores with each other and with whatever else runs here: OpenMP threads
        # that spin at their barriers while a core is taken made training 4-5x slower on a busy 2-core machine.
        # A short spin keeps the idle speed and most of the passive policy's gain under load (20 epochs of the
        # quickstart, 2 cores: idle 12.2 s default, 12.7 s short spin, 16.5 s passive; with two busy loops
        # beside it 246 s default, 22.7 s short spin, 21.2 s passive). libgomp reads GOMP_SPINCOUNT.
        if "OMP_WAIT_POLICY" not in env:
            env.setdefault("GOMP_SPINCOUNT", "10000")
        for item in container.get("env", []):
            env[item["name"]] = path_map.rewrite(self.substitute(str(item.get("value", "")), scope, where))
        task.log_path = task_dir / "log.txt"
        task.progress_path = task_dir / "progress"
        deadline = deadline_of(template)
        cwd = path_map.local(container["workingDir"]) if container.get("workingDir") else str(task_dir)
        with open(task.log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(  # noqa: S603 - the template's own argv, no shell
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
            except FileNotFoundError:
                return "Error", None, f"command not found: {argv[0]}"
            with self._lock:
                self._procs[task.node] = proc
            try:
                code = proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                kill(proc)
                return "Failed", None, f"exceeded its deadline of {deadline:g}s"
            finally:
                with self._lock:
                    self._procs.pop(task.node, None)
        if code == 0:
            return "Succeeded", 0, ""
        if code < 0:  # killed by a signal: what Argo reports as a lost or deleted pod
            return "Error", code, f"pod deleted: process killed by {signal.Signals(-code).name}"
        return "Failed", code, f"exit code {code}: {last_line(task.log_path)}"

    def _run_jobset(self, task: TaskRun, template: dict[str, Any], scope: dict[str, str]) -> None:
        """A resource template creating a JobSet: its pods as local processes, the set restarted when one fails."""
        where = f"task {task.name}"
        obj = yaml.safe_load(self.substitute(template["resource"]["manifest"], scope, where))
        jobset.check_jobset(obj, where)
        name = jobset.name_of(obj)
        restarts = int(((obj.get("spec") or {}).get("failurePolicy") or {}).get("maxRestarts", 0))
        task.started = time.monotonic()
        self._set(task, "Running", "")
        for attempt in range(restarts + 1):
            task.attempts = attempt + 1
            state, code, message = self._jobset_attempt(task, obj, name, attempt, deadline_of(template))
            task.exit_code, task.message = code, message
            if state == "Succeeded" or attempt == restarts:
                break
            self._set(task, "Retrying", f"JobSet {name} restart {attempt + 1} of {restarts}: {message}")
        task.finished = time.monotonic()
        self._set(task, state, message)

    def _jobset_attempt(self, task: TaskRun, obj: dict[str, Any], name: str, attempt: int,
                        deadline: float | None) -> tuple[str, int | None, str]:
        """One run of every pod of the set; the first to fail stops the others (what JobSet's restart does)."""
        pods = jobset.pods(obj, name, attempt)
        hosts = [p.hostname for p in pods]
        envs = [jobset.environment(pod) for pod in pods]
        argvs = [[jobset.expand(str(a), env) for a in [*pod.container.get("command", []), *pod.container.get("args", [])]]
                 for pod, env in zip(pods, envs, strict=True)]
        ports = jobset.free_ports(jobset.ports_named([a for argv in argvs for a in argv], hosts))
        procs: list[tuple[subprocess.Popen, Path]] = []
        base_env = {**os.environ, **self.env, "KAIRO_LOCAL": "1",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        base_env.setdefault("GOMP_SPINCOUNT", "10000")  # see _attempt
        task_dir = self.run_dir / "tasks" / task.node
        for pod, env, expanded in zip(pods, envs, argvs, strict=True):
            pod_dir = task_dir / pod.hostname.split(".")[0]
            root = pod_dir / "root"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            # the pod's own /tmp/outputs (its emptyDir /tmp is not mapped: see _mounts), as a container task's
            path_map = self._mounts({"container": pod.container, "volumes": pod.volumes}, pod_dir, root,
                                    f"task {task.name} pod {pod.hostname}", scratch=(OUTPUTS,))
            argv = [path_map.rewrite(jobset.hosts_to_loopback(a, hosts, ports)) for a in expanded]
            log_path = pod_dir / "log.txt"
            with open(log_path, "ab") as log:
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(pod_dir),  # noqa: S603
                                        env={**base_env, **{k: path_map.rewrite(v) for k, v in env.items()},
                                             "ARGO_PROGRESS_FILE": str(task_dir / "progress")},
                                        start_new_session=True)
            procs.append((proc, log_path))
            with self._lock:
                self._procs[f"{task.node}/{pod.hostname}"] = proc
        task.log_path, task.progress_path = procs[0][1], task_dir / "progress"
        started, seen = time.monotonic(), set()
        try:
            while True:
                for proc, _ in procs:  # a pod's every process, known before one dies and leaves its children
                    seen.update(descendants(proc.pid))
                codes = [proc.poll() for proc, _ in procs]
                failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
                if failed is not None:
                    code, log_path = codes[failed], procs[failed][1]
                    why = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                           else f"exit code {code}: {last_line(log_path)}")
                    return "Failed", code, f"pod {pods[failed].hostname.split('.')[0]} failed ({why})"
                if all(code == 0 for code in codes):
                    return "Succeeded", 0, ""
                if deadline is not None and time.monotonic() - started > deadline:
                    return "Failed", None, f"exceeded its deadline of {deadline:g}s"
                time.sleep(0.5)
        finally:
            for proc, _ in procs:
                seen.update(descendants(proc.pid))
                if proc.poll() is None:
                    kill(proc)
            kill_all(sorted(seen))  # torchrun's workers live in sessions of their own
            with self._lock:
                for pod in pods:
                    self._procs.pop(f"{task.node}/{pod.hostname}", None)

    def _mounts(self, template: dict[str, Any], task_dir: Path, root: Path, where: str,
                scratch: tuple[str, ...] = ()) -> PathMap:
        volumes = {v["name"]: v for v in (self.spec.get("volumes") or []) + (template.get("volumes") or [])}
        claims = {c["metadata"]["name"]: c["metadata"]["name"] for c in self.spec.get("volumeClaimTemplates") or []}
        for name, volume in list(volumes.items()):  # a pod the workflow creates names its claim <workflow>-<claim>
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName", "")
            if claim.startswith(f"{self.name}-") and claim[len(self.name) + 1:] in claims:
                volumes.pop(name)
                claims[name] = claim[len(self.name) + 1:]
        mounts = []
        for mount in template["container"].get("volumeMounts", []):
            name = mount["name"]
            if mount["mountPath"] == "/tmp" and "emptyDir" in volumes.get(name, {}):
                # A pod's scratch /tmp is this machine's own /tmp; mapping it would rewrite every host path
                # under /tmp that a task is given (pytest's folders, a user's --pvc folder).
                continue
            if name in claims:
                folder = self.run_dir / "volumes" / claims[name]
                folder.mkdir(parents=True, exist_ok=True)
            elif name in volumes:
                folder = volume_folder(volumes[name], self.run_dir, task_dir, self.objects, where)
            else:
                raise Unsupported(f"{where}: volumeMount '{name}' names no volume")
            target = folder / mount["subPath"] if mount.get("subPath") else folder
            mounts.append(Mount(mount["mountPath"], target))
        outputs = template.get("outputs") or {}
        folders = [*scratch, *(str(Path(path).parent) for item in outputs.get("parameters", []) + outputs.get(
            "artifacts", []) if (path := (item.get("valueFrom") or {}).get("path") or item.get("path")))]
        for folder in folders:
            mounts.append(Mount(folder, root / folder.lstrip("/")))
            (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
        return PathMap(mounts)

    def _collect_outputs(self, task: TaskRun, template: dict[str, Any]) -> None:
        root = self.run_dir / "tasks" / task.node / "root"
        outputs = template.get("outputs") or {}
        for param in outputs.get("parameters", []):
            source = param.get("valueFrom") or {}
            path = root / source.get("path", "").lstrip("/")
            if path.is_file():
                task.outputs[param["name"]] = path.read_text().strip()
            elif "default" in source:
                task.outputs[param["name"]] = str(source["default"])
        for artifact in outputs.get("artifacts", []):
            path = root / artifact["path"].lstrip("/")
            if path.exists():
                dest = self.run_dir / "artifacts" / task.node / artifact["name"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, dest)

    # -- parameters ----------------------------------------------------------------------------------

    def _scope(self, task: TaskRun, tasks: dict[str, TaskRun] | None) -> dict[str, str]:
        scope = {f"workflow.parameters.{k}": v for k, v in self.parameters.items()}
        scope.update({"workflow.name": self.name, "workflow.namespace": self.workflow["metadata"].get(
            "namespace", "default"), "workflow.uid": self.uid, "workflow.creationTimestamp": self.created,
            "pod.name": f"{self.name}-{task.node}", "workflow.status": "Running"})
        for other in (tasks or self.tasks).values():
            scope[f"tasks.{other.name}.status"] = other.state
            for key, value in other.outputs.items():
                scope[f"tasks.{other.name}.outputs.parameters.{key}"] = value
        return scope

    def substitute(self, text: str, scope: dict[str, str], where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("="):
                raise Unsupported(f"{where}: expression templates ({{{{={name[1:]}}}}}) are not run locally")
            if name not in scope:
                raise Unsupported(f"{where}: '{{{{{name}}}}}' does not resolve to a parameter, input or output")
            return scope[name]

        return _REFERENCE.sub(replace, text)

    def _set(self, task: TaskRun, state: str, message: str) -> None:
        task.state, task.message = state, message
        if not task.quiet:
            self.on_change(task)

    def _stop_all(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                below = descendants(proc.pid)  # a JobSet pod's torchrun workers live in sessions of their own
                kill(proc)
                kill_all(below)
