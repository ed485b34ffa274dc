"""Brokers for the fleet benchmark and its CI test: a RabbitMQ cluster, or one mosquitto, on loopback.

Everything lives in one folder that the caller removes: config, data, logs, the Erlang cookie and an
epmd of our own on a port of its own (`ERL_EPMD_PORT`), so the cluster never meets a system RabbitMQ
or the system's epmd on 4369, and every process it leaves can be ended by the PID we started.

The nodes run `/usr/lib/rabbitmq/bin/rabbitmq-server` as the calling user: Debian's
`/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user, which would need every folder chowned
and could not read a pytest tmp folder. Nodes 2..N join node 1 by classic peer discovery at their
first boot (no `rabbitmqctl join_cluster` round trips: each CLI call costs seconds on a busy CPU).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


class BrokerUnavailable(RuntimeError):
    """The broker software is missing or cannot start here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerUnavailable(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if port_open(port):
            return
        time.sleep(0.2)
    raise BrokerUnavailable(f"{what} did not open port {port} within {timeout:.0f} s: {_tail(log)}")


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip() or "(empty log)"
    except OSError:
        return f"(no log at {path})"


def _end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
    """Signal one process we started, then SIGKILL it if it outlives `wait`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Endpoint:
    name: str
    mqtt_port: int
    amqp_port: int = 0

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.mqtt_port}"


# --- RabbitMQ ----------------------------------------------------------------------------------------


@dataclass
class RabbitNode(Endpoint):
    dir: Path = Path()
    dist_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        """The Erlang VM's PID (the node writes it; the script we start is a shell around it)."""
        try:
            return int((self.dir / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and port_open(self.mqtt_port)


class RabbitCluster:
    """`n` RabbitMQ nodes (`rmq1@localhost` ...) clustered on loopback, MQTT and AMQP on free ports."""

    START_TIMEOUT_S = 120.0

    def __init__(self, workdir: Path, n: int, *, session_queues: str = "quorum") -> None:
        if not RABBIT_SERVER.exists():
            raise BrokerUnavailable(
                f"{RABBIT_SERVER} not found: install it with `apt-get install -y rabbitmq-server` "
                "(.ci/run does)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n
        # MQTT sessions of devices (clean_session false; the bench's default is clean sessions, which
        # have none) keep their subscriptions in one durable queue each. `classic` puts it on the node
        # the device first used: when that node dies, the device finds its session gone elsewhere.
        # `quorum` replicates it (docs/fleet.md has the numbers).
        self.session_queues = session_queues
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        (self.dir / ".erlang.cookie").write_text("alprdfleetbenchcookie")
        os.chmod(self.dir / ".erlang.cookie", 0o400)
        self.nodes = [self._node(i + 1) for i in range(n)]

    def _node(self, i: int) -> RabbitNode:
        d = self.dir / f"rmq{i}"
        for sub in ("mnesia", "log", "plugins-expand"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        node = RabbitNode(name=f"rmq{i}@localhost", mqtt_port=free_port(), amqp_port=free_port(), dir=d,
                          dist_port=free_port())
        seeds = "".join(f"cluster_formation.classic_config.nodes.{j} = rmq{j}@localhost\n"
                        for j in range(1, self.n + 1))
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            f"mqtt.durable_queue_type = {self.session_queues}\n"
            "loopback_users = none\n"
            "management_agent.disable_metrics_collector = true\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{seeds}"
            "log.file.level = warning\n"
            "log.console = false\n"
        )
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (d / "rabbitmq-env.conf").write_text("")
        node.env = {
            **os.environ,
            "HOME": str(self.dir),  # the cookie, for the node and for rabbitmqctl alike
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_MNESIA_DIR": str(d / "mnesia" / node.name),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            # one scheduler pool per node is plenty on loopback; fewer threads fight the devices less
            # the inter-node port on loopback only; no busy-waiting schedulers fighting the devices
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none",
        }
        return node

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        # our own epmd, in the foreground, so its PID is ours to end (an epmd started by a node
        # daemonizes and would outlive the cluster)
        self.epmd = subprocess.Popen([epmd, "-port", str(self.epmd_port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(self.dir)})
        deadline = time.monotonic() + 10
        while not port_open(self.epmd_port):
            if self.epmd.poll() is not None or time.monotonic() > deadline:
                raise BrokerUnavailable(f"epmd did not start on port {self.epmd_port}")
            time.sleep(0.05)
        # node 1 first: it forms the cluster the others then join
        self._launch(self.nodes[0])
        self._await(self.nodes[0])
        for node in self.nodes[1:]:
            self._launch(node)
        for node in self.nodes[1:]:
            self._await(node)
        running = self.ctl(self.nodes[0], "eval", "length(rabbit_nodes:all_running()).")
        if running.strip() != str(self.n):
            raise BrokerUnavailable(f"only {running.strip()} of {self.n} nodes clustered")

    def _launch(self, node: RabbitNode) -> None:
        log = node.dir / "log" / "console.log"
        with open(log, "ab") as out:
            node.proc = subprocess.Popen([str(RABBIT_SERVER)], env=node.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=node.dir, start_new_session=True)

    def _await(self, node: RabbitNode) -> None:
        assert node.proc is not None
        _wait_port(node.mqtt_port, node.proc, self.START_TIMEOUT_S, f"RabbitMQ node {node.name}",
                   node.dir / "log" / "console.log")

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run([str(RABBITMQCTL), "-n", node.name, *args], env=node.env, capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to the cluster, no will, connections cut."""
        pid = node.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.proc is not None:
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                _end(node.proc, signal.SIGKILL)
        node.proc = None
        (node.dir / "node.pid").unlink(missing_ok=True)

    def restart(self, node: RabbitNode) -> None:
        self._launch(node)
        self._await(node)

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for node in self.nodes if (pid := node.pid) is not None)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)  # the script stops the node cleanly
        for node in self.nodes:
            _end(node.proc, signal.SIGTERM, wait=30)
            pid = node.pid
            if pid is not None:  # a VM that outlived its script
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            node.proc = None
        _end(self.epmd, signal.SIGTERM, wait=5)
        self.epmd = None

    def __enter__(self) -> RabbitCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- mosquitto -------------------------------------------------------------------------------------


class MosquittoBroker:
    """One mosquitto for comparison (it has no cluster): the same interface as a one-node cluster."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if exe is None:
            raise BrokerUnavailable("mosquitto is not installed (apt-get install -y mosquitto)")
        self.exe = exe
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        node = Endpoint(name="mosquitto", mqtt_port=free_port())
        self.nodes = [node]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {node.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n"
            f"log_dest file {self.dir}/mosquitto.log\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port(self.nodes[0].mqtt_port, self.proc, 10, "mosquitto", self.dir / "mosquitto.log")

    def kill(self, node: Endpoint) -> None:
        _end(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self, node: Endpoint) -> None:
        self.start()

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid) if self.proc is not None and self.proc.poll() is None else 0.0

    def stop(self) -> None:
        _end(self.proc)
        self.proc = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
