"""Several hosts on one machine: each a set of processes with a data directory, a user and a
host name of its own, sharing nothing but PostgreSQL, Redis and the object store.

How far the separation goes (what a passing test proves):
- Users. Run as root (as CI runs), each host's processes run as an unprivileged uid of their
  own (no passwd entry needed) and its directory (data dir, logs, TMPDIR, HOME) is 0700 and
  owned by that uid, under a parent every uid can traverse: a process that wrote into
  another host's directory would fail with EACCES. Not root, or when the tests' Python cannot
  run as another uid (a virtualenv under a 0700 home), the hosts share the tests' uid and
  are separated by directories (and, as root, the mounts below); `Isolation.reason` says
  which. Only with separate uids do the tests check after each test that every file under a
  host's directory is its uid's.
- Mounts. As root, each host also runs in a mount namespace of its own in which every other
  host's directory is covered by an empty read-only tmpfs: a process that wrote into another
  host's directory would fail with EROFS, with or without separate uids (the one enforcement
  left when the tests' Python cannot run as another uid).
- Host names. As root, each host runs in a UTS namespace of its own (`unshare --uts`) with
  its name as host name, so the runner's worker names (`host:pid`) in an action's timeline
  say which host ran each step; otherwise the worker's pid tells it.
- Network. No network namespaces: a process in `unshare -n` has a loopback of its own and
  cannot reach the PostgreSQL, Redis and Swift listening on the machine's 127.0.0.1, so hosts
  are told apart by ports and directories only.

The commands and the settings particular to this layout come from docs/deploy.md's section
"Several hosts, no shared filesystem" (read_layout_doc): the hosts run them as written, with
only the values in angle brackets filled in.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

import requests

from tests.conftest import ROOT, process_tree

DEPLOY_DOC = ROOT / "docs" / "deploy.md"
LAYOUT_SECTION = "Several hosts, no shared filesystem"
# The first line of each shell block of the section says where it runs.
BLOCK_KINDS = {
    "# on every host": "environment",
    "# on the API hosts": "api",
    "# on the edge hosts": "edge",
    "# on the core hosts": "core",
    "# on any one host": "maintenance",
}
PLACEHOLDER = re.compile(r"<[^<>]+>")
REEXEC_PROBE = "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'import django, imageactions'])"
# Where the hosts' uids start; each run takes the next free ones (no passwd entry).
FIRST_UID = 61000


# -- the layout as docs/deploy.md writes it ---------------------------------------------------


@dataclass
class LayoutDoc:
    """The section's shell blocks: the environment every host adds, and each kind's command."""

    environment: dict[str, str]
    commands: dict[str, list[str]]

    def placeholders(self) -> set[str]:
        texts = [*self.environment.values(), *(word for command in self.commands.values() for word in command)]
        return {found for text in texts for found in PLACEHOLDER.findall(text)}


def read_layout_doc(path: Path = DEPLOY_DOC) -> LayoutDoc:
    """Parse the section's shell blocks: `export NAME=VALUE` lines, and one command per block."""
    text = path.read_text()
    heading = re.search(rf"^## \d+\. {re.escape(LAYOUT_SECTION)}\n", text, re.MULTILINE)
    assert heading, f"docs/deploy.md has no section '{LAYOUT_SECTION}'"
    following = re.search(r"^## ", text[heading.end() :], re.MULTILINE)
    section = text[heading.end() : heading.end() + following.start() if following else len(text)]
    environment: dict[str, str] = {}
    commands: dict[str, list[str]] = {}
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        kind = next((kind for start, kind in BLOCK_KINDS.items() if block.startswith(start)), None)
        assert kind, f"a shell block of '{LAYOUT_SECTION}' starts with none of {list(BLOCK_KINDS)}:\n{block}"
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        if kind == "environment":
            assert words and words[0] == "export", f"the environment block must be export lines:\n{block}"
            for word in words:
                if word != "export":
                    name, value = word.split("=", 1)
                    environment[name] = value
        else:
            assert kind not in commands, f"two shell blocks for the {kind} hosts"
            commands[kind] = words
    return LayoutDoc(environment, commands)


def fill(text: str, values: dict[str, str]) -> str:
    """`text` with each <placeholder> replaced by its value; an unknown one fails naming it."""

    def value(match: re.Match) -> str:
        assert match.group(0) in values, f"docs/deploy.md has a placeholder the tests do not fill: {match.group(0)}"
        return values[match.group(0)]

    return PLACEHOLDER.sub(value, text)


def venv_command(command: list[str]) -> list[str]:
    """The doc's `.venv/bin/X` is the repository's virtualenv, the one the tests run from (as
    scripts/test runs them); when they run from another interpreter, its directory stands in."""
    program = command[0]
    ours = Path(sys.executable).parent
    if program.startswith(".venv/bin/") and ours.absolute() != (ROOT / ".venv" / "bin").absolute():
        program = str(ours / program.removeprefix(".venv/bin/"))
    return [program, *command[1:]]


# -- who the hosts run as -----------------------------------------------------------------------


@dataclass
class Isolation:
    """How hosts are kept apart here: separate uids, UTS namespaces, or directories only."""

    separate_users: bool
    own_host_names: bool
    reason: str = ""
    next_uid: int = FIRST_UID
    private_mounts: bool = False

    @classmethod
    def probe(cls) -> Isolation:
        if os.geteuid() != 0:
            return cls(False, False, "not root: the hosts share the tests' uid and are separated by directories only")
        own_names = subprocess.run(["unshare", "--uts", "true"], capture_output=True, check=False).returncode == 0
        mounts = _private_mounts_work()
        isolation = cls(True, own_names, "" if own_names else "unshare --uts is refused here: no host names")
        isolation.private_mounts = mounts
        uid = isolation.take_uid()
        isolation.next_uid = uid  # the probe's uid is given again to the first host
        probe = subprocess.run(
            # As `manage.py worker` does: exec the interpreter again, by its path.
            isolation.prefix("probe", uid) + [sys.executable, "-c", REEXEC_PROBE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/"},
        )
        if probe.returncode:
            apart = "by read-only mounts over each other's directories" if mounts else "by directories only"
            return cls(
                False,
                own_names,
                f"{sys.executable} cannot run as another uid (is it, or the Python it links to, under a 0700 "
                f"directory such as /root?); "
                f"the hosts run as root, kept apart {apart}: {probe.stderr.strip()[-300:]}",
                private_mounts=mounts,
            )
        return isolation

    def take_uid(self) -> int:
        uid = self.next_uid
        while _uid_taken(uid):
            uid += 1
        self.next_uid = uid + 1
        return uid

    def prefix(self, host_name: str, uid: int | None, hidden: list[Path] = ()) -> list[str]:
        """The command words that start a process as the host: its host name, the other hosts'
        directories (`hidden`) covered, then its uid."""
        namespaces, script = [], []
        if self.own_host_names:
            namespaces.append("--uts")
            script.append('hostname "$0"')
        if self.private_mounts and hidden:
            namespaces.append("--mount")  # private propagation: the mounts stay in the namespace
            script += [f"mount -t tmpfs -o ro,size=4k tmpfs {shlex.quote(str(path))}" for path in hidden]
        words = []
        if namespaces:
            # hostname and mount need root, so the uid is dropped after them, by setpriv, in the namespace.
            words = ["unshare", *namespaces, "--", "sh", "-c", " && ".join([*script, 'exec "$@"']), host_name]
        if self.separate_users and uid is not None:
            words += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        return words


def _private_mounts_work() -> bool:
    """Whether a mount namespace can cover a directory with a read-only tmpfs here."""
    with tempfile.TemporaryDirectory() as directory:
        script = f"mount -t tmpfs -o ro,size=4k tmpfs {shlex.quote(directory)} && ! touch {shlex.quote(directory)}/x"
        covered = subprocess.run(["unshare", "--mount", "--", "sh", "-c", script], capture_output=True, check=False)
        return covered.returncode == 0 and not os.path.exists(os.path.join(directory, "x"))


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


# -- one host -----------------------------------------------------------------------------------


@dataclass
class Host:
    """One host of the layout: `kind` is api, edge or core; its processes run `command`."""

    name: str
    kind: str
    root: Path
    uid: int
    isolation: Isolation
    command: list[str]
    env: dict[str, str]
    port: int | None = None
    process: subprocess.Popen | None = None
    pids_seen: set[int] = field(default_factory=set)
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        """The host's directory: 0700, owned by its uid, with its logs and temporary files."""
        for directory in (self.root, self.root / "logs", self.root / "tmp"):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
            self._own(directory)

    def start(self) -> Host:
        self.starts += 1
        log_path = self.root / "logs" / f"{self.kind}-{self.starts}.log"
        with open(log_path, "ab") as log:
            self._own(log_path)
            self.process = subprocess.Popen(
                self.isolation.prefix(self.name, self.uid, self.neighbours()) + self.command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def run(self, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a one-off command (a manage.py command) as this host, with its settings."""
        return subprocess.run(
            self.isolation.prefix(self.name, self.uid, self.neighbours()) + command,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def neighbours(self) -> list[Path]:
        """The other hosts' directories (the layout adds every host before it starts any)."""
        return sorted(path for path in self.root.parent.iterdir() if path.is_dir() and path != self.root)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise AssertionError(f"host {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"host {self.name} not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        if self.kind == "api":
            try:
                return requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        from imageactions.health import live_clusters

        pool = "edge" if self.kind == "edge" else "default"
        return any(cluster.pid in self.pids() for cluster in live_clusters(pool))

    def pids(self) -> set[int]:
        """The host's live processes (remembered, so a step's worker is known after a kill -9)."""
        if self.process and self.process.poll() is None:
            self.pids_seen |= process_tree(self.process.pid)
        return self.pids_seen

    def ran(self, worker: str) -> bool:
        """Whether the runner's worker name `host:pid` is one of this host's processes."""
        host_name, _, pid = worker.rpartition(":")
        if self.isolation.own_host_names:
            return host_name == self.name
        return pid.isdigit() and int(pid) in self.pids()

    def kill(self) -> None:
        """kill -9 of every process of the host at once (its process group), as a power cut."""
        self.pids()
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def foreign_files(self) -> list[str]:
        """Files under the host's directory that some other uid owns."""
        return [f"{path} (uid {stat.st_uid})" for path, stat in _tree(self.root) if stat.st_uid != self.uid]

    def image_sized_files(self, limit: int) -> list[str]:
        """Files of the data dir over `limit` bytes, allocated or apparent, but for the metrics
        files (prometheus_client's multiprocess files, 64 KiB or more each, hold counters)."""
        metrics = self.data_dir / "metrics"
        return [
            f"{path} ({stat.st_size} bytes)"
            for path, stat in _tree(self.data_dir)
            if S_ISREG(stat.st_mode) and metrics not in path.parents and max(stat.st_size, stat.st_blocks * 512) > limit
        ]

    def log_tail(self, lines: int = 40) -> str:
        text = []
        for log in sorted((self.root / "logs").glob("*.log")):
            text.append(
                f"== {self.name} {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            )
        return "\n".join(text)

    def _own(self, path: Path) -> None:
        if self.isolation.separate_users:
            os.chown(path, self.uid, self.uid)


def _tree(root: Path):
    """(path, lstat) of `root` and everything under it; what a running process removes meanwhile
    is left out (os.walk skips a directory that went away)."""
    paths = [root]
    for directory, subdirectories, files in os.walk(root):
        paths += [Path(directory, name) for name in (*subdirectories, *files)]
    for path in paths:
        try:
            yield path, path.lstat()
        except FileNotFoundError:
            continue


class Layout:
    """The hosts of one test module, in a directory every uid may traverse but not list."""

    def __init__(self, base: Path, isolation: Isolation, doc: LayoutDoc):
        self.base, self.isolation, self.doc = base, isolation, doc
        os.chmod(base, 0o711)
        self.hosts: list[Host] = []
        self.values: dict[str, dict[str, str]] = {}  # per host: what fills the doc's placeholders
        self.http = requests.Session()

    def add(self, name: str, kind: str, values: dict[str, str], env: dict[str, str], port: int | None = None) -> Host:
        """A host of `kind` running the doc's command for it, with the doc's environment, both
        filled with `values`, on top of `env`."""
        uid = self.isolation.take_uid() if self.isolation.separate_users else os.geteuid()
        self.values[name] = values
        command = venv_command([fill(word, values) for word in self.doc.commands[kind]])
        env = {**env, **{key: fill(value, values) for key, value in self.doc.environment.items()}}
        host = Host(name, kind, self.base / name, uid, self.isolation, command, env, port)
        host.prepare()
        self.hosts.append(host)
        return host

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    def of_kind(self, kind: str) -> list[Host]:
        return [host for host in self.hosts if host.kind == kind]

    def host_of(self, worker: str) -> Host:
        found = [host for host in self.hosts if host.ran(worker)]
        assert len(found) == 1, f"worker {worker!r} belongs to {[host.name for host in found]}"
        return found[0]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(host.log_tail(lines) for host in self.hosts)

    def stop(self) -> None:
        for host in self.hosts:
            host.kill()
        shutil.rmtree(self.base, ignore_errors=True)
