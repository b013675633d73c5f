"""The demo's process runner: the Procfile's processes under supervisord.

``make demo`` (``manage.py run_demo``) and ``python -m oversight.supervise run NAME…`` write a
supervisord configuration from the ``Procfile`` and run supervisord in the foreground until
Ctrl-C or SIGTERM. A process that dies is started again at once; one that dies within
``startsecs`` of its start is retried after 1 s, 2 s, 3 s … (supervisord's backoff) and given
up after ``startretries`` tries (``FATAL``). The others keep running throughout. On Ctrl-C or
SIGTERM supervisord stops the programs one after the other, the simulator first and the web
last (SIGTERM, to the whole process group for the Celery workers; SIGKILL to the group after
``stopwaitsecs``), then the embedded PostgreSQL and Redis are stopped if this run's environment
started them (as before: ``OVERSIGHT_KEEP_SERVICES=1`` keeps them).

The web entry gets one change: uvicorn's own ``--workers N`` manager does not survive its own
death (its workers, orphaned, keep the port, and no new manager can bind it), so supervisord
holds the listening socket instead (``[fcgi-program]``) and runs N single-process uvicorns on it
with ``--fd 0``, each supervised on its own; the socket stays open while any of them lives. That
is the supervisord setup uvicorn's deployment documentation describes.

Each program's output is printed with its name in front (a supervisord event listener, below)
and kept in ``<dir>/<name>.log``; supervisord's own lines (``exited: … not expected``,
``spawned: …``) come in between. ``python -m supervisor.supervisorctl -c <dir>/supervisord.conf
status`` (or ``restart monitoring``) talks to a running runner.

This module imports nothing from Django (the runner may start before settings load).

Over ~400 lines on purpose: writing the configuration, running supervisord and reporting a
process that crashed are one lifecycle, the demo's only one.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import io
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from oversight import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_PROGRAMS = ("web", "scoring", "monitoring", "beat", "simulator")


@dataclass(frozen=True)
class Policy:
    """How supervisord runs one program (priority: lower starts first and stops last)."""

    priority: int
    startsecs: int = 3  # up this long = started; a death before that is a failed start (backoff)
    startretries: int = 10  # failed starts in a row before FATAL: 1 + 2 + … + 10 s ≈ a minute
    stopwaitsecs: int = 10  # SIGTERM, then SIGKILL after this long
    as_group: bool = False  # signal the whole process group (Celery's prefork pool children)


POLICIES = {
    "web": Policy(10),
    "scoring": Policy(20, stopwaitsecs=20, as_group=True),
    "monitoring": Policy(30, stopwaitsecs=20, as_group=True),
    "beat": Policy(40),
    "simulator": Policy(50, startsecs=1),
}
DEFAULT_POLICY = Policy(100)

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def read_procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines, in order (comments and blank lines skipped)."""
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not re.fullmatch(r"[\w-]+", name.strip()):
            raise ValueError(f"{path}: not a Procfile line: {line!r}")
        entries[name.strip()] = command.strip()
    return entries


def expand(command: str, env: Mapping[str, str]) -> list[str]:
    """The command's words with ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` filled in from ``env``."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        value = env.get(name, "")
        if m.group(1) and m.group(2) is not None and not value:
            return m.group(2)
        return value

    return shlex.split(_VAR.sub(sub, command))


def _take_option(argv: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` or ``name=VALUE`` from ``argv``; return VALUE (None when absent)."""
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if word.startswith(name + "="):
            del argv[i]
            return word.split("=", 1)[1]
    return None


def _uvicorn_on_shared_socket(argv: list[str]) -> tuple[list[str], str, int]:
    """uvicorn's ``--host H --port P --workers N`` → (``… --fd 0``, ``tcp://H:P``, N)."""
    argv = list(argv)
    host = _take_option(argv, "--host") or "127.0.0.1"
    port = _take_option(argv, "--port") or "8000"
    workers = int(_take_option(argv, "--workers") or "1")
    if ":" in host:
        raise ValueError(f"supervisord's shared sockets are IPv4 only: HOST={host}")
    return [*argv, "--fd", "0"], f"tcp://{host}:{port}", max(1, workers)


def _is_uvicorn(argv: Sequence[str]) -> bool:
    return any(Path(w).name == "uvicorn" for w in argv[:3])


def _resolve(argv: list[str], path: str) -> list[str]:
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        raise FileNotFoundError(f"{argv[0]} not found on PATH")
    return [exe, *argv[1:]]


def _value(word: str) -> str:
    """A command word as supervisord reads it: shell-quoted, ``%`` doubled (its own expansions)."""
    return shlex.quote(word).replace("%", "%%")


@dataclass
class Layout:
    """Where one runner keeps its files."""

    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def sock(self) -> Path:
        return self.dir / "supervisor.sock"


def render(names: Sequence[str], env: Mapping[str, str], layout: Layout, *,
           procfile: Path = BASE_DIR / "Procfile", color: bool = False) -> str:
    """supervisord's configuration for the Procfile's ``names`` (all of them when empty)."""
    entries = read_procfile(procfile)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ValueError(f"not in {procfile.name}: {', '.join(unknown)}")
    path = env.get("PATH", os.defpath)
    password = secrets.token_urlsafe(18)
    conf = configparser.RawConfigParser()
    conf.optionxform = str  # type: ignore[assignment,method-assign]
    conf["supervisord"] = {
        "nodaemon": "true",
        # its own lines (exited / spawned / gave up): on the terminal (nodaemon) and in this file
        "logfile": str(layout.dir / "supervisord.log"),
        "loglevel": "info",
        "pidfile": str(layout.dir / "supervisord.pid"),
        "childlogdir": str(layout.dir),
        "identifier": "oversight",
        **({"user": "root"} if os.geteuid() == 0 else {}),  # says so rather than warning about it
    }
    conf["unix_http_server"] = {"file": str(layout.sock), "chmod": "0700",
                                "username": "oversight", "password": password}
    conf["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
    conf["supervisorctl"] = {"serverurl": f"unix://{layout.sock}", "username": "oversight", "password": password}
    listener = [sys.executable, "-m", "oversight.supervise", "log-listener", *(["--color"] if color else [])]
    conf["eventlistener:logs"] = {
        "command": " ".join(_value(w) for w in listener),
        "events": "PROCESS_LOG",
        "buffer_size": "10000",
        "priority": "1",  # starts first, stops last: nothing a program says is lost
        "autorestart": "true",
        "startsecs": "1",
        "stdout_logfile": "NONE",  # its stdout is supervisord's event protocol
        "stderr_logfile": "/dev/stdout",
        "stderr_logfile_maxbytes": "0",
        "directory": str(BASE_DIR),
    }
    for name in names or list(entries):
        argv = expand(entries[name], env)
        policy = POLICIES.get(name, DEFAULT_POLICY)
        section: dict[str, str] = {
            "directory": str(BASE_DIR),
            "autostart": "true",
            "autorestart": "true",
            "startsecs": str(policy.startsecs),
            "startretries": str(policy.startretries),
            "stopsignal": "TERM",
            "stopwaitsecs": str(policy.stopwaitsecs),
            "stopasgroup": str(policy.as_group).lower(),
            "killasgroup": "true",
            "priority": str(policy.priority),
            "redirect_stderr": "true",
            "stdout_logfile": str(layout.dir / "%(program_name)s.log"),
            "stdout_logfile_maxbytes": "10MB",
            "stdout_logfile_backups": "2",
            "stdout_events_enabled": "true",
        }
        if _is_uvicorn(argv):
            argv, socket_url, workers = _uvicorn_on_shared_socket(argv)
            section |= {"socket": socket_url, "numprocs": str(workers),
                        "process_name": "%(program_name)s-%(process_num)d",
                        "stdout_logfile": str(layout.dir / "%(program_name)s-%(process_num)d.log")}
            kind = "fcgi-program"
        else:
            kind = "program"
        section["command"] = " ".join(_value(w) for w in _resolve(argv, path))
        conf[f"{kind}:{name}"] = section
    out = io.StringIO()
    conf.write(out)
    return out.getvalue()


def rpc(layout: Layout) -> Any:
    """An XML-RPC proxy to the runner's supervisord (``.supervisor.getAllProcessInfo()`` …)."""
    from xmlrpc.client import ServerProxy

    from supervisor.xmlrpc import SupervisorTransport

    conf = configparser.RawConfigParser()
    conf.read(layout.conf)
    ctl = conf["supervisorctl"]
    transport = SupervisorTransport(ctl["username"], ctl["password"], ctl["serverurl"])
    return ServerProxy("http://127.0.0.1", transport=transport)


class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived: stop everything."""


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted` in the main thread (then the finally blocks run)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    before = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _sockets(conf_text: str) -> list[str]:
    conf = configparser.RawConfigParser()
    conf.read_string(conf_text)
    return [conf[s]["socket"] for s in conf.sections() if "socket" in conf[s]]


def _bindable(url: str) -> bool:
    """Whether supervisord will be able to bind ``tcp://host:port`` (it sets SO_REUSEADDR too)."""
    import socket

    host, _, port = url.removeprefix("tcp://").rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _kill_tree(pid: int) -> None:
    import psutil  # type: ignore[import-untyped]  # no types-psutil here

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


def supervise(names: Sequence[str], env: Mapping[str, str], layout: Layout, *,
              say: Callable[[str], None] = print, stop_timeout: float = 90.0) -> int:
    """Run supervisord over ``names`` until it exits or SIGINT/SIGTERM; return its exit code.

    On a signal supervisord is asked to stop (SIGTERM) and waited for; after ``stop_timeout`` it
    and everything under it is killed.
    """
    layout.dir.mkdir(parents=True, exist_ok=True)
    text = render(names, env, layout, color=sys.stdout.isatty())
    busy = [url for url in _sockets(text) if not _bindable(url)]
    if busy:
        say(f"{', '.join(busy)}: address in use (another demo? set OVERSIGHT_PORT or --port)")
        return 1
    fd = os.open(layout.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the socket's password
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)
        fh.write(text)
    cmd = [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(layout.conf)]
    proc = subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, cwd=BASE_DIR)  # noqa: S603
    try:
        with interrupts():
            return proc.wait()
    except Interrupted:
        pass
    say("stopping: every process, then the runner")
    with interrupts():
        deadline = time.monotonic() + stop_timeout
        while True:
            try:
                proc.send_signal(signal.SIGTERM)  # idempotent: supervisord is stopping already
                return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Interrupted:
                say("still stopping (each program gets SIGTERM, then SIGKILL after its stopwaitsecs)")
            except subprocess.TimeoutExpired:
                say(f"supervisord did not stop within {stop_timeout:.0f}s: killing it and its programs")
                _kill_tree(proc.pid)
                return proc.wait()


def stop_embedded_if_started(say: Callable[[str], None] = print) -> None:
    """Stop the embedded PostgreSQL and Redis when this run's environment started them."""
    if os.environ.get("OVERSIGHT_EMBEDDED_STARTED") == "1" and not os.environ.get("OVERSIGHT_KEEP_SERVICES"):
        embedded.stop()
        say("embedded PostgreSQL and Redis stopped (data kept under var/)")


def runner_env(port: int) -> dict[str, str]:
    """The programs' environment: this process's (with the database URLs), the port, the venv first on PATH."""
    return {
        **os.environ,
        "OVERSIGHT_PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
    }


def default_layout(port: int) -> Layout:
    return Layout(embedded.VAR_DIR / "supervisor" / str(port))


def ctl_hint(layout: Layout) -> str:
    """How to ask the running supervisord about its programs."""
    conf, python = layout.conf, Path(sys.executable)
    with contextlib.suppress(ValueError):
        conf = conf.relative_to(Path.cwd())
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return f"{python} -m supervisor.supervisorctl -c {conf} status   (or: restart monitoring, tail -f web-0)"


# --- the log printer: a supervisord event listener -------------------------------------------

_COLORS = ("36", "33", "32", "35", "34", "91", "92", "93", "94", "95", "96")


def log_listener(stdin: io.TextIOBase, stdout: io.TextIOBase, out: io.TextIOBase, color: bool = False) -> None:
    """Print each PROCESS_LOG event's lines as ``name | line`` on ``out`` until stdin closes.

    supervisord's listener protocol: ``READY`` on stdout, a header line and ``len`` characters of
    payload on stdin, ``RESULT 2\\nOK`` on stdout.
    """
    partial: dict[str, str] = {}
    colors: dict[str, str] = {}
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header = stdin.readline()
        if not header:
            return
        fields = dict(word.split(":", 1) for word in header.split())
        payload = stdin.read(int(fields["len"]))
        info, _, data = payload.partition("\n")
        meta = dict(word.split(":", 1) for word in info.split())
        name = meta.get("processname", "?")
        text = partial.pop(name, "") + data
        lines = text.split("\n")
        if lines[-1]:
            partial[name] = lines[-1]  # the rest of this line comes with the next event
        label = f"{name:<12}|"
        if color:
            code = colors.setdefault(name, _COLORS[len(colors) % len(_COLORS)])
            label = f"\x1b[{code}m{label}\x1b[0m"
        for line in lines[:-1]:
            out.write(f"{label} {line.rstrip(chr(13))}\n")
        out.flush()
        stdout.write("RESULT 2\nOK")
        stdout.flush()


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oversight.supervise", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run Procfile entries under supervisord until Ctrl-C / SIGTERM")
    run.add_argument("names", nargs="*", help=f"Procfile entries (default: {' '.join(DEMO_PROGRAMS)})")
    run.add_argument("--port", type=int, default=int(os.environ.get("OVERSIGHT_PORT", "8000")))
    run.add_argument("--dir", type=Path, default=None, help="config, socket and logs (default var/supervisor/PORT)")
    listen = sub.add_parser("log-listener", help="(run by supervisord) print program output with names")
    listen.add_argument("--color", action="store_true")
    opts = parser.parse_args(argv)
    if opts.command == "log-listener":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
        log_listener(stdin, sys.stdout, sys.stderr, color=opts.color)  # type: ignore[arg-type]
        return 0
    code = 1
    try:
        with interrupts():
            embedded.ensure_environment(roles=True)  # as settings.py would: the programs get the app's URL
        layout = Layout(opts.dir) if opts.dir else default_layout(opts.port)
        code = supervise(opts.names or DEMO_PROGRAMS, runner_env(opts.port), layout)
    except Interrupted:
        pass
    finally:
        stop_embedded_if_started()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
