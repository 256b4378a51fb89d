"""A real local multi-node Ray cluster for integration tests: a head and a worker node.

Both nodes run on 127.0.0.1 with token auth; each gets its own temp dir (short paths: Ray's
unix sockets must fit in 107 characters) and its own ports, so a developer's ``make ray-up``
cluster is left alone. Jobs go in through ``ray job submit`` against the head's dashboard,
exactly as ``make tune-cluster`` sends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
JOB_EXCLUDES = [".venv", ".venv-k8s", ".git", "runs", "*.egg-info", "__pycache__", ".pytest_cache"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRayCluster:
    head_cpus: int = 1
    worker_cpus: int = 2
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp")))

    def __post_init__(self) -> None:
        self.port = free_port()
        self.dashboard_port = free_port()
        self.home = self.root / "home"  # an empty HOME: no ~/.ray/auth_token to fall back on
        self.home.mkdir()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, token: str | None = "cluster", **extra: str) -> dict[str, str]:
        """Environment for the cluster and its clients; ``token=None`` leaves it out."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))} | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.home),
            "RAY_AUTH_MODE": "token",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if token is not None:
            env["RAY_AUTH_TOKEN"] = self.token if token == "cluster" else token
        return env | extra

    def _ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> None:
        done = subprocess.run(
            [RAY, *args], env=env or self.env(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self, extra_env: dict[str, str] | None = None) -> LocalRayCluster:
        # Ray Train's placement-group cleaner asks the State API of "the" cluster; without
        # this it scans the machine, fails when another Ray runs here, and a trial stopped
        # by ASHA keeps its workers' reservation forever.
        env = self.env(RAY_API_SERVER_ADDRESS=self.address, **(extra_env or {}))
        self._ray(
            "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--num-cpus={self.head_cpus}", "--disable-usage-stats",
            f"--temp-dir={self.root / 'h'}", env=env,
        )  # fmt: skip
        self._ray(
            "start", f"--address=127.0.0.1:{self.port}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.worker_cpus}", "--disable-usage-stats",
            f"--temp-dir={self.root / 'w'}", env=env,
        )  # fmt: skip
        self.wait_for_nodes(2)
        return self

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run(
                [RAY, "list", "nodes", "--address", self.address, "--format", "json"],
                env=self.env(),
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                alive = [n for n in json.loads(done.stdout) if n.get("state") == "ALIVE"]
                if len(alive) >= count:
                    return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {count} alive nodes in {timeout} s")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming our temp dir, and their children."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmdline = proc.info["cmdline"] or []
                # Our temp dir, or our GCS port (the Ray Client server names only that).
                if any(
                    str(self.root) in part or part.endswith(f":{self.port}") for part in cmdline
                ):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- jobs --------------------------------------------------------------------------

    def submit(
        self,
        entrypoint: list[str],
        *,
        token: str | None = "cluster",
        wait: bool = True,
        timeout: float = 900,
        env_vars: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """``ray job submit`` the entrypoint with the repo as working dir."""
        runtime_env = {"working_dir": str(REPO), "excludes": JOB_EXCLUDES}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        cmd = [RAY, "job", "submit", "--address", self.address]
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
        if not wait:
            cmd.append("--no-wait")
        cmd += ["--", *entrypoint]
        deadline = time.monotonic() + 90
        while True:
            done = subprocess.run(
                cmd, env=self.env(token=token), capture_output=True, text=True, timeout=timeout
            )
            # Right after start the head's job agent may not be registered yet.
            if "No available agent" not in done.stderr or time.monotonic() > deadline:
                return done
            time.sleep(2)

    def _job_cli(self, verb: str, job_id: str) -> str:
        """What ``ray job <verb>`` prints about one job (stdout and stderr together)."""
        done = subprocess.run(
            [RAY, "job", verb, "--address", self.address, job_id],
            env=self.env(),
            capture_output=True,
            text=True,
        )
        return done.stdout + done.stderr

    def job_status(self, job_id: str) -> str:
        # The CLI ends with a line like "Job 'raysubmit_…' succeeded" (on stderr).
        text = self._job_cli("status", job_id).lower()
        for word, status in (
            ("' succeeded", "SUCCEEDED"),
            ("' failed", "FAILED"),
            ("stopped", "STOPPED"),
            ("running", "RUNNING"),
            ("pending", "PENDING"),
        ):
            if word in text:
                return status
        return "UNKNOWN"

    def job_logs(self, job_id: str) -> str:
        return self._job_cli("logs", job_id)

    def wait_job(self, job_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job_status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(2)
        raise TimeoutError(f"job {job_id} still running after {timeout} s")


@contextlib.contextmanager
def cluster_with_s3(s3_server, bucket: str):
    """A two-node cluster whose nodes get the S3 server's endpoint and credentials from their
    environment (as pods do from the ConfigMap and Secret), with ``bucket`` made."""
    s3_server.start()
    s3_server.make_bucket(bucket)
    cluster = LocalRayCluster(head_cpus=1, worker_cpus=2)
    try:
        cluster.start(extra_env=s3_server.env)
        yield cluster, s3_server
    finally:
        cluster.stop()


def job_id_from(output: str) -> str:
    for token in output.replace("'", " ").split():
        if token.startswith("raysubmit_"):
            return token.strip(".,")
    raise AssertionError(f"no job id in:\n{output}")
