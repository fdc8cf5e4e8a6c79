"""The CLI's `--ips A,B,…`: the same command on several nodes, one paddle.distributed launch on each.

    node A: ppddpm ab --seed 0-15 --nproc 2 --ips A,B --out runs/ab     # ranks 0, 1: rank 0 writes runs/ab
    node B: ppddpm ab --seed 0-15 --nproc 2 --ips A,B --out runs/ab     # ranks 2, 3: write nothing there

**Addresses.** paddle.distributed.launch numbers the ranks node by node in the order of --ips, so
each node must know which address is its own: the one of --ips this machine has (a socket can bind
to it), or --host. Its launcher is told (`--host`, else it guesses from the host name), and its
ranks bind and advertise the interface that holds the address: GLOO_SOCKET_IFNAME for gloo (without
it gloo advertises what the host name resolves to, often 127.0.0.1, and the other nodes' connections
are refused) and NCCL_SOCKET_IFNAME, unless they are set already.

**Meeting.** Before anything is launched the nodes' `ppddpm` processes meet: the first node of
--ips, the lead, listens on --port; the others connect and say which node they are and which
command they run (the same, bar --host, or every node is refused). Once all are there the lead says
go and each node starts its launch; paddle's store (in rank 0) listens on the lead's --port + 1.

**One job.** The connections stay open while the ranks run, with a heartbeat each second, so that
no node outlives the job and none ends without saying why (one line, naming the node):
- a node not there within --join-timeout, or ranks not all joined within --join-timeout after the
  meeting: every node ends;
- a node lost mid-run (its connection closes before it said how its launch ended, which is at once
  when its processes die, or it is silent for LOST_AFTER s): the others stop their ranks as on
  Ctrl-C (what rank 0's node wrote in --out stays, as on one node; another node's streams, in its
  scratch folder, go with it) within LOST_AFTER + 2 × GRACE_SECONDS s;
- a node whose launch fails tells the others, which stop theirs; Ctrl-C or SIGTERM on one node
  stops every node.
Outputs: rank 0's node writes --out, the others nothing (`ppddpm.core.ranks.on_lead_node`). There
is no second launch across nodes (on one node, `ppddpm.cli.launch.run` may start one).
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ppddpm.cli import launch
from ppddpm.cli.options import JOIN_TIMEOUT, PORT
from ppddpm.cli.signals import stopped
from ppddpm.errors import BadValue

LOST_AFTER = 10.0          # s of silence after which a node counts as lost
BEAT = 1.0                 # s between heartbeats
POLL = 0.2                 # s between looks at the connections and the local launch
DRAIN = 2.0                # s a node whose launch failed listens for a peer's loss (which may be the cause)
HELLO_WAIT = 5.0           # s the lead waits for a connecting node to say who it is
SEND_TIMEOUT = 5.0         # s a message may take to go out
MAX_MESSAGE = 65536        # bytes: a longer line is not from a ppddpm node
SIOCGIFADDR = 0x8915       # Linux ioctl: an interface's IPv4 address
NODE_OPTIONS = ("host", "port", "join_timeout")


class NodesFailed(Exception):
    """The run across nodes ended early: one line, and the exit status."""

    def __init__(self, line: str, status: int = 1):
        super().__init__(line)
        self.status = status


@dataclass(frozen=True)
class Node:
    """This node's place in a run across `ips`."""
    ips: tuple
    address: str
    interface: str
    port: int
    join_timeout: float

    @property
    def lead(self) -> str:
        return self.ips[0]

    def ranks(self, nproc: int) -> range:
        """The ranks launched here: paddle numbers them node by node, in the order of --ips."""
        index = self.ips.index(self.address)
        return range(index * nproc, (index + 1) * nproc)


def given(args) -> list:
    """The options of a multi-node run given on the command line, as the user wrote them."""
    return [f"--{name.replace('_', '-')}" for name in NODE_OPTIONS if getattr(args, name, None) is not None]


def here(args) -> Node:
    """This node of --ips (--host, or the one address of --ips this machine has), with --port and
    --join-timeout: one line (BadValue) when that is not one address, or it has no interface."""
    mine = [a for a in args.ips if _is_mine(a)]
    ips = ",".join(args.ips)
    if args.host is not None:
        if args.host not in args.ips:
            raise BadValue(f"--host {args.host} is not one of --ips {ips}; give this node's address among them")
        if args.host not in mine:
            raise BadValue(f"--host {args.host} is not an address of this machine; give this node's own address")
        address = args.host
    elif len(mine) == 1:
        address = mine[0]
    elif not mine:
        raise BadValue(f"none of --ips {ips} is an address of this machine; run the command on the nodes listed, or "
                       f"name this node's address with --host")
    else:
        raise BadValue(f"--ips names {len(mine)} addresses of this machine ({', '.join(mine)}); say which node this "
                       f"is with --host")
    interface = os.environ.get("GLOO_SOCKET_IFNAME") or interface_of(address)
    if not interface:
        raise BadValue(f"no network interface of this machine has {address} as its address; name the one that "
                       f"holds it in GLOO_SOCKET_IFNAME (and NCCL_SOCKET_IFNAME)")
    return Node(tuple(args.ips), address, interface, args.port or PORT, args.join_timeout or JOIN_TIMEOUT)


def _is_mine(address: str) -> bool:
    """A socket of this machine can bind to `address` (else EADDRNOTAVAIL)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def interface_of(address: str):
    """The name of the interface whose IPv4 address is `address` (for a loopback address, the
    loopback interface); None when there is none (an address added as a second one)."""
    loopback = ipaddress.IPv4Address(address).is_loopback
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue                     # no IPv4 address
            has = socket.inet_ntoa(reply[20:24])
            if has == address or (loopback and ipaddress.IPv4Address(has).is_loopback):
                return name
    return None


def command_of(args) -> str:
    """The command as parsed, for the nodes to compare: every option but --host (and the parser's own)."""
    options = {k: v for k, v in vars(args).items() if k not in ("host", "func") and not k.startswith("_")}
    return json.dumps(options, sort_keys=True, default=str)


class Link:
    """A connection to another node's `ppddpm`: JSON lines each way, read without waiting."""

    def __init__(self, sock: socket.socket, address: str):
        sock.settimeout(SEND_TIMEOUT)
        self.sock, self.address, self.buffer, self.inbox = sock, address, b"", []
        self.heard, self.closed, self.ended = time.monotonic(), False, None    # ended: the status it said

    def send(self, **message):
        if not self.closed:
            try:
                self.sock.sendall(json.dumps(message).encode() + b"\n")
            except OSError:
                self.closed = True           # gone: the reading side says so

    def receive(self) -> list:
        """The messages come so far (taken from the inbox), without waiting."""
        while not self.closed and select.select([self.sock], [], [], 0)[0]:
            try:
                chunk = self.sock.recv(MAX_MESSAGE)
            except OSError:
                chunk = b""
            self.closed = not chunk or len(self.buffer) > MAX_MESSAGE
            self.buffer += chunk
            self.heard = time.monotonic()
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                self.inbox.append(message)
        taken, self.inbox = self.inbox, []
        return taken

    def first(self, until: float):
        """The next message, waiting until `until` (time.monotonic) at most; None if none came."""
        while True:
            self.inbox = self.receive()
            if self.inbox:
                return self.inbox.pop(0)
            if self.closed or time.monotonic() >= until:
                return None
            select.select([self.sock], [], [], max(0.0, min(POLL, until - time.monotonic())))

    def close(self):
        self.closed = True
        self.sock.close()


def tell(links, **message):
    for link in links:
        link.send(**message)


def meet(node: Node, command: str) -> list:
    """The connections to the other nodes once all are there (the lead's to each other node, another
    node's to the lead): NodesFailed when one is not there within --join-timeout or runs another
    command; BadValue when --port cannot be taken."""
    return _gather(node, command) if node.address == node.lead else _reach(node, command)


def _gather(node: Node, command: str) -> list:
    """The lead: wait for every other node of --ips on --port, then tell them all to go."""
    try:
        server = socket.create_server((node.address, node.port))
    except OSError as exc:
        raise BadValue(f"--port {node.port} cannot be taken on {node.address} ({exc.strerror or exc}); choose a free "
                       f"--port, the same on every node") from None
    deadline, links = time.monotonic() + node.join_timeout, {}
    try:
        while len(links) < len(node.ips) - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [a for a in node.ips[1:] if a not in links]
                _fail(links.values(), f"node{'s' * (len(missing) > 1)} {', '.join(missing)} did not join within "
                                      f"{node.join_timeout:g} s (--join-timeout); start the same command there")
            if select.select([server], [], [], min(left, POLL))[0]:
                _admit(server.accept()[0], node, command, links)
    finally:
        server.close()
    tell(links.values(), go=True)
    return list(links.values())


def _admit(sock: socket.socket, node: Node, command: str, links: dict):
    """A connection to the lead: kept when it is a node of --ips not yet there, running this command."""
    link = Link(sock, "?")
    hello = link.first(time.monotonic() + HELLO_WAIT) or {}
    name = hello.get("node")
    if name not in node.ips[1:] or name in links:
        link.close()                     # not a node of this run (or a second one with that address)
        return
    link.address, links[name] = name, link
    if hello.get("command") != command:
        _fail(links.values(), f"node {name} runs another command than the first node, {node.lead}: run the same "
                              f"one on every node (only --host may differ)", status=2)


def _fail(links, line: str, status: int = 1):
    tell(links, stop=line, status=status)
    raise NodesFailed(line, status)


def _reach(node: Node, command: str) -> list:
    """Another node: connect to the lead (trying until --join-timeout), say who this is, and wait
    for its go — which comes once every node is there, so within the lead's own --join-timeout."""
    deadline = time.monotonic() + node.join_timeout
    while True:
        try:
            wait = max(0.1, min(2.0, deadline - time.monotonic()))
            sock = socket.create_connection((node.lead, node.port), timeout=wait, source_address=(node.address, 0))
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise NodesFailed(f"node {node.lead} (the first of --ips) did not answer on --port {node.port} within "
                                  f"{node.join_timeout:g} s (--join-timeout); start the same command there") from None
            time.sleep(0.5)
    link = Link(sock, node.lead)
    link.send(node=node.address, command=command)
    answer = link.first(time.monotonic() + node.join_timeout + LOST_AFTER) or {}
    if "go" in answer:
        return [link]
    if "stop" in answer:
        raise NodesFailed(str(answer["stop"]), int(answer.get("status", 1)))
    how = "closed the connection" if link.closed else "did not answer"
    raise NodesFailed(f"node {node.lead} (the first of --ips) {how} before the run began")


def run(args, argv: list, node: Node) -> int:
    """`ppddpm <argv>` as --nproc ranks on `node` (`here`), held together with the other nodes of --ips
    (module docstring); this node's outcome as `ppddpm.cli.launch.run` gives it, or one line."""
    say = f"ppddpm {args.command}"
    try:
        links = meet(node, command_of(args))
    except NodesFailed as exc:
        print(f"{say}: error: {exc}", file=sys.stderr)
        return exc.status
    scratch = Path(tempfile.mkdtemp(prefix="ppddpm-launch-"))
    try:
        ending = _launch(args.nproc, argv, node, links, scratch)
        if isinstance(ending, NodesFailed):
            print(f"{say}: error: {ending}", file=sys.stderr)
            return ending.status
        if node.address != node.lead and ending.status == 0:
            mine = node.ranks(args.nproc)
            ending.out += (f"{say}: ranks {mine[0]}-{mine[-1]} of {len(node.ips) * args.nproc} ran on this node "
                           f"({node.address}); rank 0's node, {node.lead}, printed and wrote the results\n")
        return ending.tell()
    finally:
        for link in links:
            link.close()
        launch.keep_for_debugging(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _launch(nproc: int, argv: list, node: Node, links: list, scratch: Path):
    """This node's launch, watched with the others: its `launch.Verdict`, or NodesFailed when the
    run was ended here for a node missing, lost or failed (the lead tells every node)."""
    env = {name: os.environ.get(name, node.interface) for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")}
    proc = launch.start(nproc, argv, scratch, ["--ips", ",".join(node.ips), "--host", node.address,
                                               "--start_port", str(node.port + 1)], env)
    try:
        ending = _watch(node, links, proc, scratch, nproc)
    except BaseException as exc:                 # Ctrl-C, SIGTERM: every node stops
        launch.stop_group(proc, scratch=scratch)
        tell(links, stop=f"node {node.address} was {stopped(exc)}", status=1)
        raise
    if ending is None:
        ending = launch.verdict(scratch, node.ranks(nproc), proc.returncode)
        if ending.status != 0:                   # a peer lost at the same time is the likelier cause
            ending = _listen(links, time.monotonic() + DRAIN, whole=ending.whole) or ending
    if isinstance(ending, NodesFailed):
        launch.stop_group(proc, scratch=scratch)
        tell(links, stop=str(ending), status=ending.status)      # the lead passes it on to every node
    else:
        tell(links, done=ending.status, line=_gist(ending.err))
    return ending


def _gist(err: str) -> str:
    """The line of a failed launch's stderr that says what went wrong: ppddpm's own (its error or its
    report of the launch), else the last one (a traceback's exception)."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("ppddpm")]
    return (own or lines or [""])[0 if own else -1]


def _watch(node: Node, links: list, proc, scratch: Path, nproc: int):
    """Until this node's launch ends: heartbeats out, the others' messages in; NodesFailed as soon as
    the run must end here, None when the launch ended by itself."""
    joined_by, beat = time.monotonic() + node.join_timeout, 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now >= beat:
            tell(links, alive=1)
            beat = now + BEAT
        ending = _listen(links, now)
        if ending is not None:
            return ending
        if now > joined_by and not launch.joined(scratch, node.ranks(nproc)):
            return NodesFailed(f"the ranks did not all join within {node.join_timeout:g} s (--join-timeout) of the "
                               f"nodes' meeting (paddle's store: {node.lead}:{node.port + 1})")
        time.sleep(POLL)
    return None


def _listen(links: list, until: float, whole: bool = False):
    """What the other nodes said, until `until` (time.monotonic): NodesFailed for a stop (the lead's
    verdict), a node lost, or — unless this node's own failure is `whole` (every rank said it) — a
    node's failed launch; None if nothing of that."""
    while True:
        now = time.monotonic()
        for link in links:
            for message in link.receive():
                if "stop" in message:
                    return NodesFailed(str(message["stop"]), int(message.get("status", 1)))
                if "done" in message:
                    link.ended = int(message["done"])
                    if link.ended != 0 and not whole:
                        return NodesFailed(f"node {link.address} failed: {message.get('line', '')}", link.ended)
            if link.ended is None and (link.closed or now - link.heard > LOST_AFTER):
                how = "its connection closed" if link.closed else f"silent for {LOST_AFTER:g} s"
                return NodesFailed(f"node {link.address} was lost mid-run ({how}); the ranks here were stopped and "
                                   f"what they wrote is kept, as after Ctrl-C")
        if now >= until or all(link.ended is not None for link in links):
            return None
        time.sleep(POLL)
