"""Run one of our entrypoints as a Ray job on a running cluster and follow it to the end.

What a pipeline step (or any outside caller) needs from the Ray Jobs API: submit
``python -m ray_jobs.<job> ...`` with the repository as ``working_dir``, stream the driver's
output as it comes, and return its status and whole log. The cluster's token comes from the
environment (``RAY_AUTH_TOKEN`` with ``RAY_AUTH_MODE=token``, e.g. from the Kubernetes
Secret KubeRay generates), never from an argument. A caller stopped by SIGTERM (a cancelled
pipeline run, a deleted pod) stops its Ray job too, instead of leaving it holding the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monolith.errors import ConfigError, MonolithError

log = logging.getLogger(__name__)

# What never travels with a job's working_dir (the same list as the Makefile's).
EXCLUDES = [".venv", ".venv-k8s", ".git", "runs", "*.egg-info", "__pycache__"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Consecutive failed polls (with backoff, ~5 minutes) before the job counts as lost.
MAX_POLL_MISSES = 12


class JobFailed(MonolithError):
    """The Ray job ended in FAILED or STOPPED."""


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    logs: str

    def result_line(self, prefix: str) -> str | None:
        """The last log line starting with ``prefix``, without it (e.g. ``FINAL_RESULT ``)."""
        lines = [ln for ln in self.logs.splitlines() if ln.startswith(prefix)]
        return lines[-1].removeprefix(prefix) if lines else None


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise ConfigError(
            f"ray_address = {address!r}: give the cluster's dashboard URL, e.g. "
            "http://monolith-head-svc.<namespace>.svc.cluster.local:8265"
        )
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection, auth: say which and where
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Ray cluster at {address}: {first}") from None


def run_job(
    address: str,
    entrypoint: list[str],
    working_dir: str,
    *,
    name: str,
    poll_s: float = 2.0,
    timeout_s: float = 86400.0,
    echo: Callable[[str], None] = lambda text: print(text, end="", flush=True),
) -> JobOutcome:
    """Submit ``entrypoint`` with ``working_dir`` uploaded, stream its log through ``echo``,
    and wait for the end. Raises JobFailed (with the log's last lines) unless it succeeded."""
    from monolith.lineage import COMMIT_ENV, git_commit

    client = _client(address)
    runtime_env: dict[str, Any] = {"working_dir": working_dir, "excludes": EXCLUDES}
    commit = git_commit(working_dir)  # .git is not uploaded: the commit travels as a variable
    if commit:
        runtime_env["env_vars"] = {COMMIT_ENV: commit}
    job_id = client.submit_job(
        entrypoint=shlex.join(entrypoint),
        runtime_env=runtime_env,
        metadata={"submitted_by": "monolith-pipeline", "step": name},
    )
    log.info("submitted %s to %s as %s: %s", name, address, job_id, shlex.join(entrypoint))

    def stop(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping Ray job %s", signum, job_id)
        sys.exit(128 + signum)  # the finally below stops the job

    previous = signal.signal(signal.SIGTERM, stop)
    shown, status, logs, misses = 0, "PENDING", "", 0
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        while True:
            try:
                status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
                logs = client.get_job_logs(job_id)
                misses = 0
            except Exception as exc:  # noqa: BLE001 - a head restarting, a dropped connection
                misses += 1
                if misses > MAX_POLL_MISSES:
                    raise JobFailed(
                        f"{name}: lost Ray job {job_id} at {address} ({misses} polls failed: "
                        f"{type(exc).__name__}: {exc})"
                    ) from None
                log.warning("polling Ray job %s failed (%s); retrying", job_id, exc)
                time.sleep(min(30.0, poll_s * 2**misses))
                continue
            if len(logs) > shown:
                echo(logs[shown:])
                shown = len(logs)
            if status in TERMINAL:
                finished = True
                break
            if time.monotonic() > deadline:
                raise JobFailed(f"{name}: Ray job {job_id} ran past {timeout_s:.0f} s; stopped")
            time.sleep(poll_s)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not finished:  # whatever ended the wait, the job must not run on unwatched
            with contextlib.suppress(Exception):
                client.stop_job(job_id)
                log.warning("stopped Ray job %s", job_id)
    outcome = JobOutcome(job_id, status, logs)
    if status != "SUCCEEDED":
        errors = [ln for ln in logs.splitlines() if ln.startswith("error:")]
        reason = errors[-1] if errors else " | ".join(logs.strip().splitlines()[-3:])
        raise JobFailed(f"{name}: Ray job {job_id} {status}: {reason}")
    return outcome
