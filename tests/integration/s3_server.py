"""A real S3 endpoint for tests: moto's standalone server in a subprocess, and a cuttable proxy.

``S3Server`` runs ``python -m moto.server`` on 127.0.0.1 (a free port) and speaks to it over
HTTP like any client would; nothing is mocked in-process. moto keeps its buckets in memory, so
``stop()`` + ``start()`` is a *fresh, empty* server on the same port. To take the endpoint away
while keeping its data (a MinIO restart on a persistent volume, a network outage) put a
``TcpProxy`` in front and ``cut()`` it; ``pause()`` (SIGSTOP) makes the server hang instead.

Fixtures (registered in ``conftest.py``):

    s3_server   session-wide running server: .endpoint_url, .env, .client(), .make_bucket(name),
                .stop() / .start(), .pause() / .resume(), .require_auth()
    s3_env      s3_server with its AWS_* variables set in os.environ for this test
    s3_proxy    a TcpProxy in front of s3_server: .endpoint_url, .env, .cut(), .restore(),
                .cut_after(n_bytes)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

# Distinctive values, so a scan for leaked credentials cannot match anything by accident.
ACCESS_KEY_ID = "MONOLITHTESTKEYID0001"
SECRET_ACCESS_KEY = "monolith-test-secret-do-not-log-0001"
REGION = "us-east-1"
HOST = "127.0.0.1"
_NO_AUTH = "inf"  # moto's INITIAL_NO_AUTH_ACTION_COUNT default: never enforce


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def aws_env(endpoint_url: str, key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY):
    """AWS_* variables for a client of ``endpoint_url``, isolated from ~/.aws and EC2 metadata."""
    missing = str(Path(tempfile.gettempdir()) / "monolith-no-aws-config")
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_AWS_VARS_TO_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


class _Endpoint:
    """An HTTP endpoint on ``host:port`` that the AWS SDKs can be pointed at."""

    host: str
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, …"""
        return aws_env(self.endpoint_url)


class S3Server(_Endpoint):
    """moto's S3 server as a subprocess on ``host:port`` (a free port unless given)."""

    def __init__(self, host: str = HOST, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen | None = None
        fd, log_path = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_path)

    def start(self, timeout_s: float = 30.0) -> S3Server:
        if self.process and self.process.poll() is None:
            return self
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        with open(self.log_path, "ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{self.log_tail()}")
            with suppress(OSError):
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server; its in-memory buckets are gone (``start()`` gives a fresh one)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open, requests hang (clients hit their read timeout)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset endpoint)."""
        self._moto_api("reset", b"")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def client(self, service: str = "s3", **credentials: str) -> Any:
        """A boto3 client of this server (the test credentials unless others are given)."""
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=credentials.get("key_id", ACCESS_KEY_ID),
            aws_secret_access_key=credentials.get("secret", SECRET_ACCESS_KEY),
        )

    def make_bucket(self, name: str, **credentials: str) -> str:
        """Create bucket ``name`` (no error if it exists); returns ``s3://name``."""
        client = self.client(**credentials)
        with suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    @contextmanager
    def require_auth(self) -> Iterator[tuple[str, str]]:
        """Enforce SigV4 + IAM on every request; yields a valid (key id, secret).

        moto skips authentication until ``INITIAL_NO_AUTH_ACTION_COUNT`` requests were served
        (default: never). This creates an IAM user allowed everything, then sets that count to
        0 through moto's ``/moto-api/reset-auth``; on exit authentication is off again.
        """
        iam = self.client("iam")
        user = f"monolith-test-{time.monotonic_ns()}"
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName="all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._moto_api("reset-auth", b"0")
        try:
            yield key["AccessKeyId"], key["SecretAccessKey"]
        finally:
            self._moto_api("reset-auth", _NO_AUTH.encode())

    def _moto_api(self, action: str, data: bytes) -> None:
        # not form-encoded: moto reads the raw body (Flask would swallow a form)
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/{action}",
            data=data,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()


class TcpProxy(_Endpoint):
    """A TCP forwarder to ``upstream`` that can be cut (connections reset, port refused)."""

    def __init__(self, upstream: tuple[str, int], host: str = HOST, port: int | None = None):
        self.upstream = upstream
        self.host = host
        self.port = port or free_port(host)
        self.bytes_up = 0  # client -> server bytes forwarded since start
        self.cut_event = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._cut_at: int | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self.cut_event.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut_after(self, n_bytes: int) -> threading.Event:
        """Cut once ``n_bytes`` more have gone upstream; the returned event is set then."""
        with self._lock:
            self._cut_at = self.bytes_up + n_bytes
        return self.cut_event

    def cut(self) -> None:
        """The endpoint dies: open connections are reset and the port refuses new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self._cut_at = None
        if listener is not None:
            listener.close()
        for sock in sockets:
            with suppress(OSError):
                # linger 0: close() sends RST, as a crashed peer's kernel would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()
        self.cut_event.set()

    def restore(self) -> TcpProxy:
        """The endpoint is back, on the same port."""
        return self.start()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if upstream:
                    with self._lock:
                        self.bytes_up += len(data)
                        due = self._cut_at is not None and self.bytes_up >= self._cut_at
                    if due:
                        self.cut()
                        return
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A running moto S3 server for the whole session (restarted if a test stopped it)."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3_server``, running, with its AWS_* variables in os.environ for this test."""
    s3_server.start()
    for name in _AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    """A cuttable TCP proxy in front of ``s3_server``."""
    s3_server.start()
    proxy = TcpProxy((s3_server.host, s3_server.port)).start()
    try:
        yield proxy
    finally:
        proxy.cut()
