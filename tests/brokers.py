"""Private RabbitMQ nodes, a RabbitMQ cluster and PostgreSQL clusters that tests may take down.

The machine's own broker (rabbit@<host> on 5672) and PostgreSQL (5432) serve every session
on the machine, so no test may stop, kill or reconfigure them. A test that needs an outage
gets one of these instead: each lives in its own directory under HARNESS_ROOT with its own
ports, and is only ever addressed by its own node name / data directory.

Directory names carry the owning process's pid and start time, so `reap_stale()` can tell
what a killed pytest run (or bench run) left behind from what a live session is using.

Everything here blocks (subprocesses, polling); async tests call it via asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

RABBITMQ_BIN = Path(os.environ.get("FLEET_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
PG_BIN = Path(os.environ.get("FLEET_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
HARNESS_ROOT = Path(tempfile.gettempdir()) / "llm-fleet-harness"
PG_OS_USER = "postgres"

_RMQ_KIND = "rmq"
_PG_KIND = "pg"
_node_seq = itertools.count(1)
_ports_lock = threading.Lock()
_ports_taken: set[int] = set()


class _Started:
    """`with X() as x:` starts x and always closes it, also when starting fails."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class HarnessError(RuntimeError):
    """A private broker or database could not be started, stopped or queried."""


# -- processes, ports, ownership ---------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    # A zombie has exited; only its parent's wait() is missing.
    return fields is not None and fields[0] not in ("Z", "X")


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _processes_under(directory: Path, comm: str) -> list[int]:
    """Live processes named `comm` whose working directory is inside `directory`.

    Servers here run with cwd set to their own directory, so this finds them even when
    their pid file is missing; matching on the name spares anything else that happens to
    sit there (an epmd started by a node, say, is shared with the system broker).
    """
    prefix = str(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        cwd = _cwd(pid)
        if cwd is None:
            continue
        cwd = cwd.removesuffix(" (deleted)")
        if (cwd == prefix or cwd.startswith(prefix + "/")) and _comm(pid) == comm and _alive(pid):
            found.append(pid)
    return found


def _wait_gone(pids: Sequence[int], within: float) -> bool:
    give_up = time.monotonic() + within
    while any(_alive(p) for p in pids):
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range.

    Nodes keep their ports across stop/start, so the port must stay free while a node is
    down: an ephemeral port could meanwhile be taken by any outgoing connection (a worker
    retrying, rabbitmqctl's own distribution listener on 35672-35682).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    with _ports_lock:
        for _ in range(200):
            port = rng.randrange(20000, low)
            if port in _ports_taken:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _ports_taken.add(port)
            return port
    raise HarnessError(f"no free port found in 20000-{low}")


def _owner_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{_start_time(pid)}"


def _instance_dir(kind: str) -> Path:
    # Sticky and world-writable like /tmp: sessions of different users share the root.
    HARNESS_ROOT.mkdir(exist_ok=True)
    with contextlib.suppress(PermissionError):
        HARNESS_ROOT.chmod(0o1777)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{_owner_tag()}-", dir=HARNESS_ROOT))


def _owner_alive(dirname: str) -> bool | None:
    """Whether the process that created this instance directory still runs (None: not ours)."""
    parts = dirname.split("-", 3)
    if len(parts) != 4 or parts[0] not in (_RMQ_KIND, _PG_KIND) or not parts[1].isdigit():
        return None
    pid, started = int(parts[1]), parts[2]
    # Comparing start times catches a recycled pid.
    return _alive(pid) and _start_time(pid) == started


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


def _run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None,
    cwd: Path,
    timeout: float,
    **popen: Any,
) -> str:
    try:
        out: subprocess.CompletedProcess[str] = subprocess.run(
            [str(c) for c in cmd],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            **popen,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(map(str, cmd))} timed out after {timeout}s") from exc
    if out.returncode != 0:
        raise HarnessError(
            f"{' '.join(map(str, cmd))} exited {out.returncode}\n{out.stdout}{out.stderr}"
        )
    return out.stdout


def reap_stale(root: Path | None = None) -> list[str]:
    """Kill and delete the instances whose owning process has exited; return their names.

    A test session that was killed never ran its teardown: its brokers would hold memory,
    ports and epmd names forever without this.
    """
    root = root or HARNESS_ROOT
    if not root.is_dir():
        return []
    reaped = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or _owner_alive(entry.name) is not False:
            continue
        if entry.name.startswith(_RMQ_KIND + "-"):
            beams = _processes_under(entry, "beam.smp")
            for pid in beams:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(beams, 10)
        else:
            _pg_halt(entry / "data", entry)
        shutil.rmtree(entry, ignore_errors=True)
        reaped.append(entry.name)
    return reaped


# -- RabbitMQ -----------------------------------------------------------------------------


class BrokerNode(_Started):
    """One private RabbitMQ node: own directory, ports, node name and Erlang cookie.

    `stop()` is a graceful shutdown of the whole node and keeps its data, so `start()`
    recovers durable queues; `kill()` is a crash (SIGKILL of the Erlang VM). The AMQP
    listener and the distribution port are bound to 127.0.0.1 only, where the default
    guest user may log in.

    `management=True` enables the management plugin (HTTP API) on a port of its own, also
    on 127.0.0.1 (`management_url`); it is off by default because it slows the boot.
    `max_message_size` sets the broker's own limit on a message body, in bytes.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        cookie: str | None = None,
        port: int | None = None,
        dist_port: int | None = None,
        boot_timeout: float = 120.0,
        management: bool = False,
        max_message_size: int | None = None,
    ) -> None:
        # The pid keeps names unique across concurrent sessions (epmd is machine-wide).
        self.name = name or f"fleet-{os.getpid()}-{next(_node_seq)}@localhost"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.management_port = free_port() if management else None
        self.max_message_size = max_message_size
        self.boot_timeout = boot_timeout
        self.dir = _instance_dir(_RMQ_KIND)
        self.pid_file = self.dir / "node.pid"
        self.log_file = self.dir / "log" / f"{self.name}.log"
        self._server_out = self.dir / "server.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        for sub in ("mnesia", "log", "home"):
            (self.dir / sub).mkdir()
        cookie_file = self.dir / "home" / ".erlang.cookie"
        cookie_file.write_text(cookie or secrets.token_hex(16).upper())
        # Erlang refuses a cookie file others can read.
        cookie_file.chmod(0o400)
        # Own files: nothing from /etc/rabbitmq (the system node's settings) applies here.
        (self.dir / "rabbitmq.conf").write_text(self._conf())
        (self.dir / "rabbitmq-env.conf").write_text("")
        plugins = "[rabbitmq_management].\n" if management else ""
        (self.dir / "enabled_plugins").write_text(plugins)
        (self.dir / "advanced.config").write_text("[].\n")

    def __repr__(self) -> str:
        return f"BrokerNode({self.name}, port={self.port})"

    def _conf(self) -> str:
        lines: list[str] = []
        if self.management_port is not None:
            lines += [
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {self.management_port}",
            ]
        if self.max_message_size is not None:
            lines.append(f"max_message_size = {self.max_message_size}")
        return "".join(f"{line}\n" for line in lines)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API, logged in as guest (needs management=True)."""
        if self.management_port is None:
            raise HarnessError(f"{self.name} was created without management=True")
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def url_for(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{urllib.parse.quote(vhost, safe='')}"

    @property
    def is_running(self) -> bool:
        """The node's VM is up (its rabbit app may still have been stopped via ctl)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def os_pid(self) -> int | None:
        """The beam.smp process of this node, if it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # A pid file left by a crash may name a recycled pid: trust it only if it is our VM.
        if _comm(pid) == "beam.smp" and _cwd(pid) == str(self.dir) and _alive(pid):
            return pid
        return None

    def _env(self) -> dict[str, str]:
        d = self.dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(d / "home"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            # The cookie is not secret from local users, so keep the distribution port local.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # If no epmd runs yet, the node starts one: it must not listen beyond loopback.
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _cli(self, tool: str, args: Sequence[str], timeout: float) -> str:
        cmd: list[str | Path] = [RABBITMQ_BIN / tool, "-n", self.name, "-q", *args]
        return _run(cmd, env=self._env(), cwd=self.dir, timeout=timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """`rabbitmqctl -n NODE -q ARGS...`; its stdout. Raises HarnessError on failure."""
        return self._cli("rabbitmqctl", args, timeout)

    def queues(self, *args: str, timeout: float = 60.0) -> str:
        """`rabbitmq-queues -n NODE -q ARGS...`; its stdout."""
        return self._cli("rabbitmq-queues", args, timeout)

    def start(self) -> None:
        """Boot the node and return once it accepts connections (no-op if it runs)."""
        if self._closed:
            raise HarnessError(f"{self.name} was closed")
        if self.is_running:
            return
        # `rabbitmqctl wait` would read a crashed run's pid file and report that pid dead.
        self.pid_file.unlink(missing_ok=True)
        with self._server_out.open("ab") as out:
            self._proc = subprocess.Popen(
                [RABBITMQ_BIN / "rabbitmq-server"],
                env=self._env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Out of pytest's process group: a Ctrl-C must reach teardown, not the node.
                start_new_session=True,
            )
        try:
            self._await_boot()
        except BaseException:
            self.kill()
            raise

    def _await_boot(self) -> None:
        # `await_startup` gives up at once while the node is not yet registered with epmd;
        # `wait PIDFILE` first waits for the pid file, then for the boot to finish.
        timeout = self.boot_timeout
        cmd = [RABBITMQ_BIN / "rabbitmqctl", "-n", self.name, "-q", "wait", self.pid_file]
        waiter = subprocess.Popen(
            [str(c) for c in [*cmd, "--timeout", str(int(timeout))]],
            env=self._env(),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        give_up = time.monotonic() + timeout + 10
        try:
            while waiter.poll() is None:
                if not self.is_running:
                    raise HarnessError(f"{self.name} exited while booting\n{self._diagnostics()}")
                if time.monotonic() > give_up:
                    raise HarnessError(f"{self.name} did not boot in {timeout}s")
                time.sleep(0.1)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            out, _ = waiter.communicate()
        if waiter.returncode != 0:
            raise HarnessError(
                f"{self.name} did not boot (rabbitmqctl wait exited {waiter.returncode}):\n"
                f"{out.decode(errors='replace')}\n{self._diagnostics()}"
            )

    def _diagnostics(self) -> str:
        return f"{_tail(self._server_out)}\n{_tail(self.log_file)}"

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown of the whole node (no-op if it is down); its data stays."""
        if not self.is_running:
            return
        assert self._proc is not None
        try:
            # With the pid file, `stop` returns only once the VM process has exited.
            self.ctl("stop", str(self.pid_file), timeout=timeout)
            self._proc.wait(timeout)
        except (HarnessError, subprocess.TimeoutExpired) as exc:
            self.kill()
            raise HarnessError(f"{self.name} did not stop gracefully; killed it") from exc

    def kill(self) -> None:
        """SIGKILL the node's VM, as a crash would (no-op if it is down)."""
        pid = self.os_pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if pid is not None:
            # The wrapper script reaps the VM and exits at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if proc.poll() is None:
            # Still booting (no pid file yet): the VM and its wrapper share a process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Kill the node and delete its directory; the object is unusable afterwards."""
        if self._closed:
            return
        self.kill()
        self._closed = True
        shutil.rmtree(self.dir, ignore_errors=True)


class BrokerCluster(_Started):
    """Three (or `size`) private nodes clustered together, sharing one Erlang cookie.

    Nodes boot in parallel, then the others join nodes[0]. A node stopped or killed with
    stop_node / kill_node rejoins on start_node, as long as a majority stayed up (a node
    that finds all its peers down waits for them, as RabbitMQ does).
    """

    def __init__(
        self,
        size: int = 3,
        *,
        boot_timeout: float = 180.0,
        management: bool = False,
        max_message_size: int | None = None,
    ) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes: list[BrokerNode] = []
        try:
            for _ in range(size):
                self.nodes.append(
                    BrokerNode(
                        cookie=cookie,
                        boot_timeout=boot_timeout,
                        management=management,
                        max_message_size=max_message_size,
                    )
                )
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"BrokerCluster({[n.name for n in self.nodes]})"

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> None:
        """Boot every node and form the cluster."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            # list() re-raises the first failure.
            list(pool.map(lambda n: n.start(), self.nodes))
        seed, joiners = self.nodes[0], self.nodes[1:]
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.ctl("stop_app"), joiners))
            # One join at a time: each one rewrites the cluster's membership.
            for node in joiners:
                node.ctl("join_cluster", seed.name)
            list(pool.map(lambda n: n.ctl("start_app"), joiners))
        self._await_members()

    def node(self, name: str) -> BrokerNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise HarnessError(f"{name} is not a node of {self}")

    def running(self) -> list[BrokerNode]:
        return [n for n in self.nodes if n.is_running]

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against the first node that is up (cluster-wide commands)."""
        return self._any_running().ctl(*args, timeout=timeout)

    def _any_running(self) -> BrokerNode:
        for n in self.nodes:
            if n.is_running:
                return n
        raise HarnessError(f"no node of {self} is running")

    def running_nodes(self) -> set[str]:
        """Node names the cluster itself reports as running."""
        status: dict[str, Any] = json.loads(self.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def _await_members(self, within: float = 60.0) -> None:
        want = {n.name for n in self.nodes if n.is_running}
        give_up = time.monotonic() + within
        while (seen := self.running_nodes()) != want:
            if time.monotonic() > give_up:
                raise HarnessError(f"cluster reports {sorted(seen)}, expected {sorted(want)}")
            time.sleep(0.2)

    def leader_of(self, queue: str, vhost: str = "/") -> BrokerNode:
        """The node holding the leader of a quorum queue, as the cluster reports it now."""
        rows: list[dict[str, Any]] = json.loads(
            self.ctl("list_queues", "-p", vhost, "name", "leader", "--formatter", "json")
        )
        for row in rows:
            if row.get("name") == queue:
                leader = row.get("leader")
                if not isinstance(leader, str) or "@" not in leader:
                    raise HarnessError(f"queue {queue!r} has no leader: {row}")
                return self.node(leader)
        raise HarnessError(f"no queue {queue!r} in vhost {vhost!r}")

    def quorum_status(self, queue: str, vhost: str = "/") -> dict[str, str]:
        """Raft state of each member of a quorum queue: {node name: 'leader'|'follower'|...}."""
        rows: list[dict[str, Any]] = json.loads(
            self._any_running().queues("quorum_status", queue, "-p", vhost, "--formatter", "json")
        )
        return {str(r["Node Name"]): str(r["Raft State"]) for r in rows}

    def stop_node(self, node: BrokerNode) -> None:
        """Graceful shutdown of one node; the others carry on."""
        self._own(node).stop()

    def kill_node(self, node: BrokerNode) -> None:
        """SIGKILL one node's VM; the others carry on."""
        self._own(node).kill()

    def start_node(self, node: BrokerNode) -> None:
        """Boot a stopped or killed node and wait until the cluster counts it as running."""
        self._own(node).start()
        self._await_members()

    def _own(self, node: BrokerNode) -> BrokerNode:
        if node not in self.nodes:
            raise HarnessError(f"{node} is not a node of {self}")
        return node

    def close(self) -> None:
        errors = []
        for n in self.nodes:
            try:
                n.close()
            except HarnessError as exc:
                errors.append(exc)
        if errors:
            raise HarnessError(f"closing {self}: {errors}")


# -- PostgreSQL ---------------------------------------------------------------------------


def _as_pg_user() -> dict[str, Any]:
    """Popen arguments that run a PostgreSQL binary as PG_OS_USER when we are root.

    initdb and postgres refuse to run as root. Switching user inside Popen (rather than
    via runuser or pg_ctl, which daemonizes) keeps the postmaster our own child: a killed
    postmaster is reaped at once instead of lingering as a zombie, whose pid in
    postmaster.pid would make the next start refuse to run.
    """
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam(PG_OS_USER)
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _drop_orphan_shm(data: Path) -> None:
    """Remove the SysV segment a killed postmaster leaves behind, if nothing uses it.

    The next start of the same data directory would clean it up; a directory being
    deleted never starts again, and the segments would pile up across runs.
    """
    try:
        key_line = (data / "postmaster.pid").read_text().splitlines()[6]
        key, shmid = key_line.split()
    except (OSError, IndexError, ValueError):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(
            ["ipcs", "-m"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        for line in listing.splitlines():
            cols = line.split()
            # ipcs prints: key (hex) shmid owner perms bytes nattch ...
            ours = len(cols) >= 6 and cols[1] == shmid and cols[0].startswith("0x")
            if ours and int(cols[0], 16) == int(key) and cols[5] == "0":
                subprocess.run(["ipcrm", "-m", shmid], check=False, timeout=10)


def _pg_halt(data: Path, directory: Path) -> None:
    """Stop whatever PostgreSQL runs from `data` right away, without a checkpoint."""
    pid = _postmaster_pid(data)
    if pid is not None and _alive(pid) and _cwd(pid) == str(data):
        # SIGQUIT is the postmaster's immediate shutdown: it takes its children down too.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        _wait_gone([pid], 15)
    stray = _processes_under(directory, "postgres")
    for p in stray:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    _wait_gone(stray, 10)
    _drop_orphan_shm(data)


class PrivatePostgres(_Started):
    """A throwaway PostgreSQL cluster on 127.0.0.1, trust auth, user `postgres`.

    `initdb` runs on the first start(). `kill()` is a crash (SIGKILL of the postmaster);
    the next start() runs crash recovery.
    """

    _STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def __init__(self, *, port: int | None = None, start_timeout: float = 60.0) -> None:
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.dir = _instance_dir(_PG_KIND)
        self.data = self.dir / "data"
        self.log_file = self.dir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_OS_USER)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)

    def __repr__(self) -> str:
        return f"PrivatePostgres(port={self.port}, dir={self.dir})"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def os_pid(self) -> int | None:
        """The postmaster's pid, if it runs."""
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _initdb(self) -> None:
        _run(
            [PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            env=None, cwd=self.dir, timeout=120, **_as_pg_user(),
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/brokers.py: private, loopback only, sockets in its own directory.\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                # A process crash (kill) keeps what the OS already has; only a machine
                # crash would need fsync, and this cluster does not outlive one.
                "fsync = off\n"
            )

    def _ready(self, pid: int) -> bool:
        # What pg_ctl -w checks: the postmaster writes "ready" into line 8 of its lock file.
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0] == str(pid) and lines[7].strip() == "ready"

    def start(self) -> None:
        """Start the postmaster (initdb first if needed); return once it accepts connections."""
        if self._closed:
            raise HarnessError(f"{self} was closed")
        if self.is_running:
            return
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [PG_BIN / "postgres", "-D", self.data],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Out of pytest's process group: a Ctrl-C must reach teardown, not postgres.
                start_new_session=True,
                **_as_pg_user(),
            )
        give_up = time.monotonic() + self.start_timeout
        while not self._ready(self._proc.pid):
            if self._proc.poll() is not None or time.monotonic() > give_up:
                self.kill()
                raise HarnessError(
                    f"PostgreSQL on port {self.port} did not start\n{_tail(self.log_file)}"
                )
            time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Shut down in pg_ctl's `mode` (fast: disconnect clients, checkpoint); no-op if down."""
        if not self.is_running:
            return
        assert self._proc is not None
        self._proc.send_signal(self._STOP_SIGNALS[mode])
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise HarnessError(f"{self} did not stop in {timeout}s; killed it") from exc

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would, and wait for its backends to follow."""
        if not self.is_running:
            return
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(30)
        # Backends notice the postmaster's death on their own; a start() while one still
        # holds the shared memory would be refused.
        give_up = time.monotonic() + 30
        while _processes_under(self.dir, "postgres"):
            if time.monotonic() > give_up:
                raise HarnessError(f"{self}: backends outlived the postmaster")
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Shut down at once (no checkpoint) and delete the cluster's directory."""
        if self._closed:
            return
        self._closed = True
        if self.is_running:
            self.stop("immediate")
        # Cleans up after kill(): backends still exiting, the orphaned shared memory.
        _pg_halt(self.data, self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
