"""Two "machines" on this one: Linux network namespaces `a` and `b` joined by a veth pair, with the
addresses A and B (198.18.0.0/15, the range kept for network tests), loopback up in each. Made with
`ip` (iproute2) as root, under names unique to the run, and removed with every process left in them.
Used by tests/test_two_nodes.py and benchmarks/run_all.py (2 nodes x 1 rank).
"""
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys

A, B = "198.18.0.1", "198.18.0.2"           # the two nodes; 198.18.0.3 and .4 are never anyone's


class NoNamespaces(RuntimeError):
    """Network namespaces cannot be made here: why, in one line."""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def why_not():
    """Why namespaces cannot be made here (None if they can be tried)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) here"
    listed = _ip("netns", "list", check=False)
    return f"`ip netns` is not available here: {listed.stderr.strip()}" if listed.returncode else None


class Nodes:
    """Two namespaces, `a` (A) and `b` (B), joined by a veth pair."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.a, self.b = f"ppddpm-{tag}-a", f"ppddpm-{tag}-b"
        self.veth = (f"pd{tag}a", f"pd{tag}b")

    def make(self):
        _ip("link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
        for ns, veth, address in ((self.a, self.veth[0], A), (self.b, self.veth[1], B)):
            _ip("netns", "add", ns)
            _ip("link", "set", veth, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self):
        for ns in (self.a, self.b):
            self.kill(ns)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.veth[0], check=False)          # if it never reached its namespace

    @staticmethod
    def pids(ns):
        listed = _ip("netns", "pids", ns, check=False)
        return [int(p) for p in listed.stdout.split()] if listed.returncode == 0 else []

    def kill(self, ns):
        """SIGKILL to every process in `ns`: the node is gone at once, as a machine that dies."""
        for pid in self.pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def start(self, ns, *args, env=None, private=None):
        """`ppddpm ARGS` on a node (its stdout and stderr piped). With `private` (an existing folder), the
        node sees there an empty file system of its own — a tmpfs in a mount namespace of its own, as a
        node that does not share that file system — and the last line of its stderr lists what it left there."""
        command = [sys.executable, "-m", "ppddpm", *map(str, args)]
        if private is not None:
            command = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                       'mount -t tmpfs none "$0" || exit 99; "$@"; s=$?; echo "left in $0: $(ls -A "$0")" >&2; exit $s',
                       str(private), *command]
        return subprocess.Popen(["ip", "netns", "exec", ns, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)


@contextlib.contextmanager
def two_nodes():
    """Nodes made for the block and removed after it; NoNamespaces where they cannot be made."""
    why = why_not()
    if why:
        raise NoNamespaces(why)
    made = Nodes()
    try:
        made.make()
    except subprocess.CalledProcessError as exc:
        made.remove()
        raise NoNamespaces(f"cannot make network namespaces here: {exc.stderr.strip()}") from None
    try:
        yield made
    finally:
        made.remove()
