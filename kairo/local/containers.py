"""`kairo run --local --containers`: each task in the image its template names, as Argo's executor runs it.

The DAG, parameters, retries and outputs are the local runner's (runner.py); only how one attempt runs
differs. A task runs with Podman (`kairo.images.podman_env`): its volumes bind-mounted where the template
mounts them (the work claim, ConfigMaps and Secrets as files with Kubernetes' modes and the pod's fsGroup,
/tmp an emptyDir), its outputs read from the template's `valueFrom.path` files, the pod's and container's
`securityContext` honoured (uid and group, fsGroup, read-only root, no privilege escalation, no
capabilities), the environment as rendered, and `--network=none` unless its step talks to something:
those get the host's network (the local registry, a dataset or model server, the inference server, all on
127.0.0.1).

Two things differ from a cluster, on purpose, and are the local runner's own substitutions for the cluster:
- A step that mounts no work volume (cleanup, workspace-status) gets the run's work claim at /kairo/work,
  as the process runner gives it KAIRO_WORKDIR: locally the run's state lives there, not in the API server.
- `deploy` starts a server that outlives its step (a Deployment, on a cluster). Here it runs in the image of
  the server it starts (kairo-serve), in a container that stays up after the step's process exits; the run
  removes those containers at its end (unless KAIRO_KEEP_SERVING is set).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from kairo import contract
from kairo.images import IMAGES, image_for_step, podman, podman_env
from kairo.local.mounts import Unsupported, volume_folder
from kairo.local.policy import deadline_of, last_line
from kairo.local.runner import LocalRunner
from kairo.local.tasks import TaskRun

DEFAULT_REPOSITORY = "localhost/kairo"  # where `make images-local` puts the images
# Steps that reach something over the network: the host's (loopback: the local registry, the dataset and
# model servers, the inference server). Every other step runs with --network=none.
NETWORKED = frozenset({"download", "fetch-model", "push", "pull-adapter", "deploy", "smoke", "serve"})
# deploy runs where the server it starts can run (see the module's docstring).
RUNS_IN = {"deploy": image_for_step("serve").name}
PROGRESS_DIR = "/var/run/argo"  # where Argo's executor has the progress file: ARGO_PROGRESS_FILE


class ContainerRunner(LocalRunner):
    """The local runner, each attempt a container (`repository`: where the images are, by kairo's names)."""

    def __init__(self, *args: Any, repository: str = DEFAULT_REPOSITORY, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.repository = repository.rstrip("/")
        self.prefix = f"kairo-{uuid.uuid4().hex[:8]}"
        self.serving: list[str] = []  # containers left running for servers (deploy)
        self.pod = self.spec.get("securityContext") or {}

    def run(self):
        try:
            return super().run()
        finally:
            if self.serving and not (os.environ.get("KAIRO_KEEP_SERVING") or self.env.get("KAIRO_KEEP_SERVING")):
                podman("rm", "--force", "--time", "5", *self.serving, check=False)

    def _stop_all(self) -> None:
        super()._stop_all()  # the podman clients; then the containers they ran
        names = podman("ps", "--all", "--quiet", "--filter", f"name={self.prefix}-", check=False).stdout.split()
        if names:
            podman("rm", "--force", "--time", "0", *names, check=False)

    # -- one attempt ---------------------------------------------------------------------------------

    def image(self, template: dict[str, Any]) -> str:
        """The image to run: a kairo image by its name under `repository`, any other reference as it is."""
        ref = template["container"]["image"]
        name, _, tag = ref.rpartition("/")[2].partition(":")
        step = self.step(template)
        if step in RUNS_IN:
            name = RUNS_IN[step]
        if name in {i.name for i in IMAGES}:
            return f"{self.repository}/{name}:{tag or 'latest'}"
        return ref

    @staticmethod
    def step(template: dict[str, Any]) -> str:
        command = template["container"].get("command") or []
        return command[1] if len(command) > 1 and Path(command[0]).name == "kairo-step" else ""

    def _attempt(self, task: TaskRun, template: dict[str, Any], scope: dict[str, str]) -> tuple[str, int | None, str]:
        task_dir, root = self._fresh_root(task)
        container = template["container"]
        where = f"task {task.name}"
        argv = [self.substitute(str(a), scope, where) for a in container.get("command", []) + container.get("args", [])]
        if not argv:
            raise Unsupported(f"{where}: the container has no command")
        name = f"{self.prefix}-{task.node.replace('.', '-')}-{task.attempts}"
        # --no-healthcheck: Podman 4.3 reads the images' HEALTHCHECK NONE as a check to schedule via systemd.
        options = ["--no-healthcheck", *self._security(container), *self._volumes(template, task_dir, root, where)]
        options += ["--network", "host" if self.step(template) in NETWORKED else "none"]
        for key, value in self._env(container, scope, where).items():
            options += ["--env", f"{key}={value}"]
        if container.get("workingDir"):
            options += ["--workdir", container["workingDir"]]
        task.log_path = task_dir / "log.txt"
        task.progress_path = task_dir / "argo" / "progress"
        image = self.image(template)
        if self.step(template) in RUNS_IN:
            return self._run_staying(task, name, image, options, argv, deadline_of(template))
        command = ["run", "--rm", "--name", name, "--entrypoint", argv[0], *options, image, *argv[1:]]
        return self._podman(task, name, command, deadline_of(template), f"$ [{image}] {' '.join(argv)}")

    def _run_staying(self, task: TaskRun, name: str, image: str, options: list[str], argv: list[str],
                     deadline: float | None) -> tuple[str, int | None, str]:
        """A step that leaves a server running: its container stays up (sleep), the step runs in it (exec)."""
        start = podman("run", "--detach", "--name", name, "--entrypoint", "sleep", *options, image, "infinity",
                       check=False)
        if start.returncode != 0:
            return "Error", None, f"podman could not start {image}: {last_line_of(start.stderr)}"
        self.serving.append(name)
        exec_options = [o for pair in zip(options, options[1:], strict=False) if pair[0] in ("--env", "--user")
                        for o in pair]
        return self._podman(task, name, ["exec", *exec_options, name, *argv], deadline,
                            f"$ [{image}, stays up] {' '.join(argv)}")

    def _podman(self, task: TaskRun, name: str, command: list[str], deadline: float | None,
                banner: str) -> tuple[str, int | None, str]:
        with open(task.log_path, "ab") as log:
            log.write(f"{banner}\n".encode())
            log.flush()
            proc = subprocess.Popen(["podman", *command], stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                    env=podman_env(), start_new_session=True)
            with self._lock:
                self._procs[task.node] = proc
            try:
                code = proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                podman("rm", "--force", "--time", "0", name, check=False)
                proc.wait()
                return "Failed", None, f"exceeded its deadline of {deadline:g}s"
            finally:
                with self._lock:
                    self._procs.pop(task.node, None)
        if code == 0:
            return "Succeeded", 0, ""
        if code in (125, 126, 127) and b"Error:" in task.log_path.read_bytes()[-2000:]:
            return "Error", code, f"podman: {last_line(task.log_path)}"
        if code == 137:  # SIGKILL, as a pod whose container was killed (out of memory, deleted)
            return "Error", code, "pod deleted: container killed"
        return "Failed", code, f"exit code {code}: {last_line(task.log_path)}"

    # -- how the pod is shaped -----------------------------------------------------------------------

    def _ids(self) -> tuple[int, int, int]:
        uid = int(self.pod.get("runAsUser", contract.IMAGE_UID))
        gid = int(self.pod.get("runAsGroup", uid))
        return uid, gid, int(self.pod.get("fsGroup", gid))

    def _security(self, container: dict[str, Any]) -> list[str]:
        """The pod's and the container's securityContext as Podman options."""
        context = container.get("securityContext") or {}
        uid = int(context.get("runAsUser", self._ids()[0]))
        gid = int(context.get("runAsGroup", self._ids()[1]))
        options = ["--user", f"{uid}:{gid}", "--group-add", str(self._ids()[2])]
        if context.get("runAsNonRoot", self.pod.get("runAsNonRoot")) and uid == 0:
            raise Unsupported("runAsNonRoot is set but the container would run as uid 0")
        if context.get("readOnlyRootFilesystem"):
            options += ["--read-only", "--read-only-tmpfs=false"]  # /tmp is the template's own emptyDir
        if context.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        for cap in (context.get("capabilities") or {}).get("drop", []):
            options += ["--cap-drop", cap.lower()]
        for cap in (context.get("capabilities") or {}).get("add", []):
            options += ["--cap-add", cap.lower()]
        return options

    def _env(self, container: dict[str, Any], scope: dict[str, str], where: str) -> dict[str, str]:
        """The rendered environment and what Argo's executor adds; this run's own settings (KAIRO_*)."""
        env = {k: v for k, v in self.env.items() if k.startswith("KAIRO_")}
        env.update({"KAIRO_LOCAL": "1", "ARGO_PROGRESS_FILE": f"{PROGRESS_DIR}/progress", "GOMP_SPINCOUNT": "10000"})
        for item in container.get("env", []):
            env[item["name"]] = self.substitute(str(item.get("value", "")), scope, where)
        return env

    def _volumes(self, template: dict[str, Any], task_dir: Path, root: Path, where: str) -> list[str]:
        """`--volume HOST:PATH[:ro]` for each mount, the output folders and Argo's progress folder."""
        volumes = {v["name"]: v for v in (self.spec.get("volumes") or []) + (template.get("volumes") or [])}
        claims = {c["metadata"]["name"] for c in self.spec.get("volumeClaimTemplates") or []}
        found: list[str] = []
        mounted: set[str] = set()
        mounts = list(template["container"].get("volumeMounts", []))
        if "work" in claims and not any(m["mountPath"] == contract.WORKDIR for m in mounts):
            mounts.append({"name": "work", "mountPath": contract.WORKDIR})  # see the module's docstring
        for mount in mounts:
            name = mount["name"]
            if name in claims:
                folder = self.run_dir / "volumes" / name
                folder.mkdir(parents=True, exist_ok=True)
                self._own(folder, 0o2775)
            elif name in volumes:
                folder = volume_folder(volumes[name], self.run_dir, task_dir, self.objects, where)
                self._shape(volumes[name], folder)
            else:
                raise Unsupported(f"{where}: volumeMount '{name}' names no volume")
            source = folder / mount["subPath"] if mount.get("subPath") else folder
            if not source.exists():
                continue  # an optional ConfigMap's key that is not there: the step sees no file, as in a pod
            found += ["--volume", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
            mounted.add(mount["mountPath"])
        outputs = template.get("outputs") or {}
        for item in outputs.get("parameters", []) + outputs.get("artifacts", []):
            path = (item.get("valueFrom") or {}).get("path") or item.get("path")
            if path and str(Path(path).parent) not in mounted:
                parent = str(Path(path).parent)
                local = root / parent.lstrip("/")
                local.mkdir(parents=True, exist_ok=True)
                self._own(local, 0o2775)
                found += ["--volume", f"{local}:{parent}"]
                mounted.add(parent)
        progress = task_dir / "argo"
        progress.mkdir(exist_ok=True)
        self._own(progress, 0o2775)
        return [*found, "--volume", f"{progress}:{PROGRESS_DIR}"]

    def _shape(self, volume: dict[str, Any], folder: Path) -> None:
        """What the kubelet does to a volume: an emptyDir world-writable, ConfigMap and Secret files with the
        volume's defaultMode (0644 unless set) owned by root and the pod's fsGroup."""
        if "emptyDir" in volume:
            folder.chmod(0o1777)
            return
        source = volume.get("configMap") or volume.get("secret")
        if source is None:
            self._own(folder, 0o2775)
            return
        mode = int(source.get("defaultMode", 0o644))
        fs_group = self._ids()[2]
        for path in [folder, *folder.rglob("*")]:
            _chown(path, 0, fs_group)
            path.chmod(0o755 if path.is_dir() else mode)

    def _own(self, folder: Path, mode: int) -> None:
        """A volume the pod writes to: group-owned by fsGroup, group-writable, setgid (as the kubelet leaves it)."""
        uid, _, fs_group = self._ids()
        _chown(folder, uid, fs_group)
        folder.chmod(mode)


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
    else:  # rootless Podman: the container's ids are this user's subordinate ones
        podman("unshare", "chown", "-h", f"{uid}:{gid}", str(path), check=False)


def last_line_of(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
