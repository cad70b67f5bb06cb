"""Run relay as a real subprocess (``python -m relay run``) on loopback ports, for end-to-end and crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated recursively with ``extra`` (new dict)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class RelayProcess:
    """A relay daemon in a subprocess. ``http_url`` is the OTLP/HTTP base URL, ``grpc_target`` host:port."""

    data_dir: Path
    overrides: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    http_port: int = 0
    grpc_port: int = 0
    admin_port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    #: Source tree whose ``relay`` package runs (default: this repository; benchmarks compare another revision).
    root: Path | None = None

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.admin_port = self.admin_port or free_port()
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}-config.yaml"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-relay.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def config(self) -> dict:
        """The config written for the subprocess: fast pipeline timers, loopback ports, the test's data dir."""
        base = {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                        "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                    }
                }
            },
            "pipeline": {"idle_timeout": "500ms", "root_grace": "300ms"},
            "exporters": {
                "langfuse": {
                    "batch": {"flush_interval": "50ms"},
                    "reconcile_delay": "200ms",
                    "retry_on_failure": {"initial_interval": "50ms", "max_interval": "500ms"},
                }
            },
            "storage": {"directory": str(self.data_dir)},
            "service": {
                "admin": {"endpoint": f"127.0.0.1:{self.admin_port}"},
                "log": {"level": "info", "format": "json"},
                "shutdown_timeout": "5s",
            },
        }
        return deep_merge(base, self.overrides)

    def command(self) -> list[str]:
        """The daemon's command line (benchmarks override it to run an instrumented entry point)."""
        return [sys.executable, "-m", "relay", "run", "--config", str(self.config_path)]

    def start(self, timeout: float = 20.0) -> RelayProcess:
        """Write the config, start :meth:`command` and wait until ``/healthz`` answers and the OTLP receivers accept
        connections (the admin endpoint starts first; ``/readyz`` may be 503 for reasons a test sets up)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
        env.update(self.env)
        root = self.root or ROOT
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=str(root), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/healthz", timeout=0.5) as r:
                    if r.status == 200 and self._receivers_listen():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.proc.kill()  # no daemon outlives a failed start
        self.proc.wait(10)
        raise TimeoutError(f"relay did not become healthy:\n{self.logs()}")

    def _receivers_listen(self) -> bool:
        protocols = self.config()["receivers"]["otlp"]["protocols"]
        for name, port in (("http", self.http_port), ("grpc", self.grpc_port)):
            protocol = protocols.get(name)
            if protocol is None or protocol.get("enabled", True) is False:
                continue
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return False
        return True

    def logs(self) -> str:
        """The subprocess's combined output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the daemon (no cleanup at all) and wait for it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the daemon and wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the Prometheus samples called ``name`` whose labels include ``labels``."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        return parse_metric(text, name, **labels)


def parse_metric(text: str, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` in Prometheus text exposition ``text`` matching ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
