"""A 3-node MariaDB Galera cluster on loopback for tests/cluster (tests/cluster/README.md).

    scripts/cluster.py start          start the nodes that are down (bootstrapping when all are)
    scripts/cluster.py start N        start node N (1-3) only
    scripts/cluster.py stop           stop all nodes (3, 2, then 1, so node 1 may bootstrap next time)
    scripts/cluster.py stop N         stop node N gracefully
    scripts/cluster.py kill N         SIGKILL node N
    scripts/cluster.py status         one line per node; exit 1 unless all three are ready
    scripts/cluster.py clean          stop everything and delete .cluster/

Each node runs mariadbd directly with its own config file, datadir, socket, pid file and log
under .cluster/nodeN/ (git-ignored). The PID the script launched is recorded in
.cluster/nodeN/launched.pid and processes are only ever signalled by that PID, after checking
that its command line names this node's config file: the shared server on :3306 is a mariadbd
too. Ports: SQL 3311-3313, gcomm 4511-4513, IST 4521-4523, SST 4531-4533, all shifted by
CLUSTER_PORT_OFFSET (say 100) for a second cluster, whose folder CLUSTER_DIR then names.

Importable from tests: ``start()``, ``start(2)``, ``kill(2)``, ``stop()``, ``node_status(2)``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent


def default_base() -> Path:
    """``.cluster/`` in the checkout, unless the mysql user could not reach it.

    As root the nodes run as the mysql user, which must traverse every folder above the
    data (a checkout under a private 0700 folder, as ``mktemp -d`` makes, is out of its
    reach): such a checkout keeps its cluster in /var/tmp, in a folder named after it.
    """
    local = ROOT / ".cluster"
    if os.geteuid() != 0 or all(os.stat(p).st_mode & stat.S_IXOTH for p in (ROOT, *ROOT.parents)):
        return local
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"asgi_mysql_session-cluster-{digest}"


BASE = Path(os.environ["CLUSTER_DIR"]) if os.environ.get("CLUSTER_DIR") else default_base()
NODES = (1, 2, 3)
MARIADBD = "/usr/sbin/mariadbd"
GALERA = "/usr/lib/galera/libgalera_smm.so"
DATABASE = "test"
START_TIMEOUT = float(os.environ.get("CLUSTER_START_TIMEOUT", "180"))
STOP_TIMEOUT = 60.0
# Shifts every port, for a second cluster on the same machine (e.g. 100: SQL 3411-3413).
OFFSET = int(os.environ.get("CLUSTER_PORT_OFFSET", "0"))


def say(message: str) -> None:
    print(f"cluster: {message}", flush=True)


def sql_port(n: int) -> int:
    return 3310 + OFFSET + n


def gcomm_port(n: int) -> int:
    return 4510 + OFFSET + n


def ist_port(n: int) -> int:
    return 4520 + OFFSET + n


def sst_port(n: int) -> int:
    return 4530 + OFFSET + n


def url(n: int) -> str:
    return f"mysql://root@127.0.0.1:{sql_port(n)}/{DATABASE}"


@dataclass
class Node:
    n: int

    @property
    def dir(self) -> Path:
        return BASE / f"node{self.n}"

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def cnf(self) -> Path:
        return self.dir / "my.cnf"

    @property
    def socket(self) -> Path:
        return self.dir / "mysqld.sock"

    @property
    def log(self) -> Path:
        return self.dir / "error.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "launched.pid"

    @property
    def grastate(self) -> Path:
        return self.datadir / "grastate.dat"


def node(n: int) -> Node:
    if n not in NODES:
        raise ValueError(f"no node {n}; nodes are {NODES}")
    return Node(n)


# --- installation and configuration ------------------------------------------------------------


def ensure_packages() -> None:
    missing = []
    if not os.path.exists(MARIADBD):
        missing.append("mariadb-server")
    if not os.path.exists(GALERA):
        missing.append("galera-4")
    if not shutil.which("rsync"):
        missing.append("rsync")
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"cluster: missing {', '.join(missing)}; install them (apt-get install {' '.join(missing)})")
    say(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def user_args() -> list[str]:
    # As root the nodes run as the mysql user: under root, the rsync daemon that receives an SST
    # would drop to "nobody" and fail to write the datadir. As another user they run as that user.
    return ["--user=mysql"] if os.geteuid() == 0 else []


def hand_over(nd: Node) -> None:
    """As root, give the node's folder to the mysql user that the node runs as."""
    if os.geteuid() != 0:
        return
    for path in [BASE, nd.dir, *nd.dir.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):
            shutil.chown(path, "mysql", "mysql")


def write_config(nd: Node) -> None:
    nd.dir.mkdir(parents=True, exist_ok=True)
    address = ",".join(f"127.0.0.1:{gcomm_port(i)}" for i in NODES)
    provider_options = ";".join(
        [
            f"gmcast.listen_addr=tcp://127.0.0.1:{gcomm_port(nd.n)}",
            f"ist.recv_addr=127.0.0.1:{ist_port(nd.n)}",
            "gcache.size=64M",
        ]
    )
    text = f"""\
# Written by scripts/cluster.py; rewritten on every start.
[mariadbd]
datadir={nd.datadir}
socket={nd.socket}
pid-file={nd.dir / "mariadbd.pid"}
log-error={nd.log}
port={sql_port(nd.n)}
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
performance_schema=OFF
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider={GALERA}
wsrep_cluster_name=asgi_mysql_session_test
wsrep_cluster_address=gcomm://{address}
wsrep_node_name=node{nd.n}
wsrep_node_address=127.0.0.1
wsrep_node_incoming_address=127.0.0.1:{sql_port(nd.n)}
wsrep_provider_options="{provider_options}"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{sst_port(nd.n)}
"""
    if not nd.cnf.exists() or nd.cnf.read_text() != text:
        nd.cnf.write_text(text)


def initialised(nd: Node) -> bool:
    return (nd.datadir / "mysql").is_dir()


def install_db(nd: Node) -> None:
    say(f"node{nd.n}: mariadb-install-db into {nd.datadir}")
    nd.datadir.mkdir(parents=True, exist_ok=True)
    hand_over(nd)
    cmd = [
        "mariadb-install-db",
        f"--defaults-file={nd.cnf}",
        f"--datadir={nd.datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *user_args(),
    ]
    with nd.log.open("a") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        fail(nd, f"mariadb-install-db failed with {result.returncode}")


# --- processes ---------------------------------------------------------------------------------


def recorded_pid(nd: Node) -> int | None:
    try:
        return int(nd.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_is_node(pid: int, nd: Node) -> bool:
    """True when ``pid`` is a live (not zombie) mariadbd started with this node's config."""
    with contextlib.suppress(ChildProcessError):  # reap it if it is our own child that has exited
        os.waitpid(pid, os.WNOHANG)
    # Right after exec /proc/PID/cmdline can read empty for a millisecond or so; a zombie's
    # reads empty for good.
    for _ in range(200):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return False
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        if cmdline:
            return f"--defaults-file={nd.cnf}".encode() in cmdline.split(b"\0")
        time.sleep(0.01)
    return False


def running_pid(nd: Node) -> int | None:
    pid = recorded_pid(nd)
    return pid if pid is not None and pid_is_node(pid, nd) else None


def launch(nd: Node, bootstrap: bool) -> int:
    cmd = [MARIADBD, f"--defaults-file={nd.cnf}", *user_args()]
    if bootstrap:
        cmd.append("--wsrep-new-cluster")
    with nd.log.open("a") as log:
        log.write(f"\n=== cluster.py {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n")
        log.flush()
        hand_over(nd)
        # The node outlives this process: a shell in a new session (a Ctrl-C in make or
        # pytest does not reach it) starts it in the background and says its PID. A Popen
        # of the node itself would warn, when collected, that its child still runs.
        logged = f">>{shlex.quote(str(nd.log))} 2>&1"
        shell = subprocess.run(
            ["setsid", "sh", "-c", f"{shlex.join(cmd)} </dev/null {logged} & echo $!"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            check=True,
        )
    pid = int(shell.stdout.strip())
    nd.pidfile.write_text(f"{pid}\n")
    say(f"node{nd.n}: started pid {pid}{' (bootstrapping a new cluster)' if bootstrap else ''}")
    return pid


def wait_gone(pid: int, nd: Node, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_is_node(pid, nd):
            return True
        time.sleep(0.1)
    return False


def stop_node(nd: Node, sig: signal.Signals = signal.SIGTERM) -> None:
    pid = running_pid(nd)
    if pid is None:
        say(f"node{nd.n}: not running")
        nd.pidfile.unlink(missing_ok=True)
        return
    os.kill(pid, sig)
    if not wait_gone(pid, nd, STOP_TIMEOUT if sig == signal.SIGTERM else 10):
        say(f"node{nd.n}: pid {pid} still there after {sig.name}; SIGKILL")
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, nd, 10)
    nd.pidfile.unlink(missing_ok=True)
    say(f"node{nd.n}: pid {pid} stopped ({sig.name})")


# --- state -------------------------------------------------------------------------------------


def connect(nd: Node, timeout: float = 2) -> pymysql.Connection:
    # A node that is starting or dying can fail the connection after pymysql opened its
    # socket; pymysql then leaves the socket to its traceback and the garbage collector, and
    # the ResourceWarning would surface in whichever test runs next (pytest makes warnings
    # errors). So the failure is re-raised without its traceback, once the socket is freed,
    # quietly: polling a node that is not up yet is expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return pymysql.connect(
                unix_socket=str(nd.socket), user="root", password="", connect_timeout=timeout, autocommit=True
            )
        except pymysql.err.MySQLError as exc:
            error = type(exc)(*exc.args)
        gc.collect()
    raise error


def wsrep_status(nd: Node) -> dict[str, str] | None:
    """The node's wsrep_% status variables, or None when it does not answer."""
    try:
        conn = connect(nd)
    except pymysql.err.MySQLError:
        conn = None
    if conn is None:
        # PyMySQL leaves the socket of a handshake that failed (a node starting up) open;
        # collect it here, quietly, rather than as a ResourceWarning in whatever runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
            return {str(k): str(v) for k, v in cur.fetchall()}
    except pymysql.err.MySQLError:
        return None
    finally:
        conn.close()


def is_ready(status: dict[str, str] | None) -> bool:
    return bool(
        status
        and status.get("wsrep_ready") == "ON"
        and status.get("wsrep_cluster_status") == "Primary"
        and status.get("wsrep_local_state_comment") == "Synced"
    )


def node_status(n: int) -> dict[str, str] | None:
    return wsrep_status(node(n))


def read_grastate(nd: Node) -> tuple[int, bool]:
    """(seqno, safe_to_bootstrap) from grastate.dat; (-1, False) when there is none."""
    try:
        text = nd.grastate.read_text()
    except FileNotFoundError:
        return -1, False
    seqno = re.search(r"^seqno:\s*(-?\d+)", text, re.M)
    safe = re.search(r"^safe_to_bootstrap:\s*(\d)", text, re.M)
    return (int(seqno.group(1)) if seqno else -1), bool(safe and safe.group(1) == "1")


def mark_safe_to_bootstrap(nd: Node) -> None:
    if nd.grastate.exists():
        text = nd.grastate.read_text()
        nd.grastate.write_text(re.sub(r"^safe_to_bootstrap:\s*\d", "safe_to_bootstrap: 1", text, flags=re.M))


def choose_bootstrap(candidates: list[Node]) -> Node:
    """The node marked safe_to_bootstrap, else the one with the highest seqno, else the first."""
    for nd in candidates:
        if read_grastate(nd)[1]:
            return nd
    return max(candidates, key=lambda nd: (read_grastate(nd)[0], -nd.n))


def fail(nd: Node, message: str) -> None:
    say(f"node{nd.n}: {message}; last lines of {nd.log}:")
    try:
        for line in nd.log.read_text(errors="replace").splitlines()[-25:]:
            print(f"    {line}", file=sys.stderr)
    except FileNotFoundError:
        pass
    sys.exit(1)


def wait_ready(
    nodes: list[Node], size: int | None, timeout: float = START_TIMEOUT, announce: bool = True
) -> None:
    """Wait until every node is Synced, Primary, wsrep_ready=ON (and of the given cluster size)."""
    deadline = time.monotonic() + timeout
    waiting = list(nodes)
    while waiting:
        for nd in list(waiting):
            if running_pid(nd) is None:
                fail(nd, "mariadbd exited while starting")
            status = wsrep_status(nd)
            if is_ready(status) and (size is None or int(status["wsrep_cluster_size"]) >= size):  # type: ignore[index]
                if announce:
                    say(f"node{nd.n}: ready (cluster size {status['wsrep_cluster_size']})")  # type: ignore[index]
                waiting.remove(nd)
        if waiting and time.monotonic() > deadline:
            fail(waiting[0], f"not ready after {timeout:.0f} s")
        if waiting:
            time.sleep(0.25)


def set_up_access(nd: Node) -> None:
    """root@127.0.0.1 with an empty password and the database, made once on the bootstrap node."""
    conn = connect(nd)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''")
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
    finally:
        conn.close()


# --- commands ----------------------------------------------------------------------------------


def start(*numbers: int) -> None:
    """Start the given nodes (all by default) that are not running, and wait until all are ready.

    Nodes already running are left alone. When no node runs, one is bootstrapped with
    --wsrep-new-cluster (on a first start node 1, after mariadb-install-db); the others join it
    by IST or rsync SST. When nodes run but none is in a Primary component (quorum lost), the most
    advanced one is told pc.bootstrap=YES first.
    """
    ensure_packages()
    wanted = [node(n) for n in (numbers or NODES)]
    for nd in map(node, NODES):
        write_config(nd)
    running = [nd for nd in map(node, NODES) if running_pid(nd) is not None]
    to_start = [nd for nd in wanted if nd not in running]
    if not to_start:
        wait_ready(wanted, None, announce=False)
        say(f"{len(wanted)} node(s) already running and ready; nothing to start")
        return

    if running:
        wait_primary(running)
        wait_departed(running)
    else:
        fresh = not any(initialised(nd) for nd in map(node, NODES))
        if fresh:
            first = to_start[0]
            install_db(first)
        else:
            first = choose_bootstrap([nd for nd in to_start if initialised(nd)] or to_start)
            if not initialised(first):
                install_db(first)
        mark_safe_to_bootstrap(first)
        launch(first, bootstrap=True)
        wait_ready([first], None)
        if fresh:
            set_up_access(first)
        to_start.remove(first)

    for nd in to_start:
        nd.datadir.mkdir(parents=True, exist_ok=True)  # a joiner's datadir is filled by SST
        launch(nd, bootstrap=False)
    wait_ready(to_start, None)
    expected = len([nd for nd in map(node, NODES) if running_pid(nd) is not None])
    wait_ready(wanted, expected, announce=False)
    say(f"{len(wanted)} node(s) ready, cluster size {expected}")


def wait_departed(running: list[Node], timeout: float = 30) -> None:
    """Wait until the running nodes no longer count a member that was just killed.

    A node restarted while the others still hold its dead predecessor in their view goes
    through a round of non-primary views before it is let in (about 15 s instead of 5).
    """
    deadline = time.monotonic() + timeout
    announced = False
    while time.monotonic() < deadline:
        sizes = [int((wsrep_status(nd) or {}).get("wsrep_cluster_size", "0")) for nd in running]
        if all(size <= len(running) for size in sizes):
            return
        if not announced:
            say(f"waiting until the running nodes drop the dead member(s) (cluster size {max(sizes)})")
            announced = True
        time.sleep(0.25)


def wait_primary(running: list[Node], timeout: float = 8) -> None:
    """Running nodes must form a Primary component before others can join; restore one if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = {nd.n: wsrep_status(nd) for nd in running}
        if any(s and s.get("wsrep_cluster_status") == "Primary" for s in statuses.values()):
            return
        answering = {n: s for n, s in statuses.items() if s}
        if answering and time.monotonic() > deadline - timeout / 2:
            best = max(answering, key=lambda n: int(answering[n].get("wsrep_last_committed", "-1")))
            say(f"node{best}: no Primary component among running nodes; pc.bootstrap=YES")
            conn = connect(node(best))
            try:
                with conn.cursor() as cur:
                    cur.execute("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
            finally:
                conn.close()
            time.sleep(1)
            continue
        time.sleep(0.5)
    say("warning: no Primary component among running nodes; starting the others anyway")


def stop(*numbers: int) -> None:
    """Stop the given nodes (all by default) gracefully, highest number first."""
    for n in sorted(numbers or NODES, reverse=True):
        stop_node(node(n))


def kill(n: int) -> None:
    """SIGKILL node n, as a crash would."""
    stop_node(node(n), signal.SIGKILL)


def status() -> bool:
    ok = True
    for nd in map(node, NODES):
        pid = running_pid(nd)
        st = wsrep_status(nd) if pid else None
        ok = ok and is_ready(st)
        if st:
            detail = (
                f"wsrep_ready={st.get('wsrep_ready')} state={st.get('wsrep_local_state_comment')}"
                f" cluster={st.get('wsrep_cluster_status')} size={st.get('wsrep_cluster_size')}"
                f" last_committed={st.get('wsrep_last_committed')}"
            )
        elif pid:
            detail = "not answering"
        else:
            seqno, safe = read_grastate(nd)
            detail = f"down (grastate seqno={seqno} safe_to_bootstrap={int(safe)})"
        print(f"node{nd.n} port {sql_port(nd.n)} pid {pid or '-'}: {detail}")
    return ok


def clean() -> None:
    stop()
    if BASE.exists():
        shutil.rmtree(BASE)
        say(f"removed {BASE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "clean"])
    parser.add_argument("node", nargs="?", type=int, choices=NODES)
    args = parser.parse_args(argv)
    numbers = (args.node,) if args.node else ()
    if args.command == "start":
        began = time.monotonic()
        start(*numbers)
        say(f"ready in {time.monotonic() - began:.1f} s")
    elif args.command == "stop":
        stop(*numbers)
    elif args.command == "kill":
        if not args.node:
            parser.error("kill needs a node number")
        kill(args.node)
    elif args.command == "status":
        return 0 if status() else 1
    elif args.command == "clean":
        clean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
