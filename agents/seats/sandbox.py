"""Starting an isolated body's process: in a bubblewrap sandbox, or (asked for explicitly) a plain child process.

``isolate: true`` runs the body under `bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``,
Debian's ``bubblewrap`` package): new user, PID, network, IPC and UTS namespaces (no network at all), a read-only
view of the code it needs (the Python installation, the import path, this package) and nothing else of the file
system, a private ``/tmp`` of bounded size, an empty environment, and the process's rlimits (address space, CPU
seconds, file size, open files, no core dumps). Hidden even where they lie under a path the body can read: the
model cache (trained victims, the referee's datasets, the contest secret), the raw files the datasets are read
from (so a dataset's held-out test split cannot be rebuilt), and any path the caller adds. The body's data comes
from the referee's process over the pipe, public splits only (:mod:`extractgym.agents.seats.isolation`).

``isolate: process`` is the weaker mode for machines without bubblewrap: a fresh interpreter with an empty
environment, a private cache folder and the same rlimits, but the machine's files and network in view. Where
``bwrap`` is missing or cannot create namespaces, ``isolate: true`` is refused (:func:`sandbox_problem`) instead of
quietly running the weaker mode.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SANDBOX_ENV = "EXTRACTGYM_SANDBOX"  # set in the body's environment: "bwrap" or "process"
PASSED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")


@dataclass(frozen=True)
class Limits:
    """What an isolated body may use (the scenario's ``limits:`` on an isolated attacker seat).

    Attributes:
        start_seconds: to start and build the body (the interpreter's imports included).
        round_seconds: for one round's play, the time the referee's side spends answering its calls included.
        snapshot_seconds: to hand over its surrogate's snapshot.
        memory_mb: address space of the body's process (RLIMIT_AS).
        cpu_seconds: CPU time of the body's process over its whole life (RLIMIT_CPU).
        max_frame_mb: the largest message the body may send (a snapshot included).
        tmp_mb: size of the sandbox's private ``/tmp`` (and the largest file it may write).
    """

    start_seconds: float = 180.0
    round_seconds: float = 600.0
    snapshot_seconds: float = 120.0
    memory_mb: int = 8192
    cpu_seconds: int = 7200
    max_frame_mb: int = 64
    tmp_mb: int = 512


@lru_cache(maxsize=1)
def _bwrap() -> tuple[str | None, str]:
    """The ``bwrap`` executable if it can build this module's sandbox here, else ``(None, why not)``."""
    path = shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    try:
        done = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                               *_system_links(), "--proc", "/proc", "--dev", "/dev", "true"],
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"bwrap cannot run here ({e})"
    if done.returncode != 0:
        return None, f"bwrap cannot create its namespaces here ({done.stderr.decode(errors='replace').strip()[:200]})"
    return path, ""


def sandbox_problem() -> str | None:
    """Why ``isolate: true`` cannot run here (None: it can)."""
    return _bwrap()[1] or None


def _system_links() -> list[str]:
    """``/bin``, ``/lib``... as the host has them (symlinks into /usr on merged-/usr systems, else read-only)."""
    out: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            out += ["--ro-bind", str(p), str(p)]
    return out


def code_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """What the body needs to read: the interpreter's prefixes, the import path, this package, ``extra``; never
    ``/``, ``/tmp`` or the home folder (or a folder above it) as a whole, nor a folder above this package that the
    import path names only because a checkout lies in it: a body's module kept there is not found in the sandbox
    (give it a folder of its own)."""
    import extractgym

    exe = Path(os.path.realpath(sys.executable))
    package = Path(extractgym.__file__).resolve().parent
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(exe.parent.parent)]
    never = {Path("/"), Path.home().resolve(), *Path.home().resolve().parents,  # too broad to show whole
             Path("/tmp"), *Path("/tmp").parents}  # the sandbox's own /tmp is private: never the host's

    def above_package(c: str) -> bool:
        """A folder above this package on the import path (pytest puts a checkout's parent there): the package is
        bound itself; only a site folder holding it needs showing whole."""
        p = Path(os.path.abspath(c or os.getcwd()))
        return p in package.parents and not (p == package.parent and p.name.endswith("-packages"))

    import_path = [c for c in sys.path if not above_package(c)]
    paths: list[Path] = []
    for c in [*prefixes, str(package), *import_path, *extra]:
        p = Path(os.path.abspath(c or os.getcwd()))
        if p in never or not p.exists():
            continue
        p = p if p.is_dir() else p.parent
        paths.append(p)
    # the outermost of nested paths
    keep: list[Path] = []
    for p in sorted(set(paths), key=lambda q: len(q.parts)):
        if not any(p == k or k in p.parents for k in keep):
            keep.append(p)
    return [str(p) for p in keep]


def hidden_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """What the body may never read: the model cache, the datasets' raw files, the contest secret, ``extra``."""
    from extractgym.victims.cache import cache_root
    from extractgym.victims.datasets import raw_data_paths
    from extractgym.victims.secret import secret_paths

    return [str(Path(os.path.abspath(p))) for p in (str(cache_root()), *raw_data_paths(), *secret_paths(), *extra)]


def _environment(mode: str, cache: str) -> dict[str, str]:
    env = {"HOME": "/tmp" if mode == "bwrap" else cache, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "EXTRACTGYM_CACHE": cache, SANDBOX_ENV: mode, "PYTHONDONTWRITEBYTECODE": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


def bwrap_command(argv: list[str], limits: Limits, readable: tuple[str, ...] = (),
                  hidden: tuple[str, ...] = ()) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` in the sandbox (see the module docstring)."""
    path, why = _bwrap()
    if path is None:
        raise RuntimeError(why)
    cmd = [path, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
           "--ro-bind", "/usr", "/usr", *_system_links()]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        if Path(f).exists():
            cmd += ["--ro-bind", f, f]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/tmp"]
    bound = [p for p in code_paths(readable) if not p.startswith("/usr/") and p != "/usr"]
    for p in bound:
        cmd += ["--ro-bind", p, p]
    for h in hidden_paths(hidden):
        hp = Path(h)
        if not hp.exists() or not any(hp == Path(b) or Path(b) in hp.parents for b in bound + ["/usr"]):
            continue  # not in view anyway
        cmd += ["--tmpfs", h] if hp.is_dir() else ["--ro-bind", "/dev/null", h]
    for k, v in _environment("bwrap", "/tmp/extractgym-cache").items():
        cmd += ["--setenv", k, v]
    cmd += ["--chdir", "/tmp", "--uid", "65534", "--gid", "65534", "--"]
    return cmd + argv


def _rlimits(limits: Limits) -> None:
    """Applied in the child before it runs anything (inherited through bwrap)."""
    mem = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.tmp_mb * 2**20, limits.tmp_mb * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


class Launched:
    """A started body process: the process and, in ``process`` mode, its private folder (removed at close)."""

    def __init__(self, process: subprocess.Popen, scratch: str | None) -> None:
        self.process, self.scratch = process, scratch

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def launch(mode: str, fd: int, limits: Limits, readable: tuple[str, ...] = (), hidden: tuple[str, ...] = (),
           log: int | None = None) -> Launched:
    """Start ``python -m extractgym.agents.seats.isolation FD`` in ``mode`` (``bwrap`` or ``process``); its output
    goes to the file descriptor ``log`` (default: discarded)."""
    argv = [sys.executable, "-I", "-m", "extractgym.agents.seats.isolation", str(fd)]
    scratch = None
    if mode == "bwrap":
        cmd, env, cwd = bwrap_command(argv, limits, readable, hidden), None, None
    elif mode == "process":
        scratch = tempfile.mkdtemp(prefix="extractgym-body-")
        cmd, env, cwd = argv, _environment("process", scratch), scratch
    else:
        raise ValueError(f"unknown isolation mode {mode!r}")
    out = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            env=env if env is not None else {},
                            cwd=cwd, start_new_session=True, preexec_fn=lambda: _rlimits(limits))  # noqa: PLW1509
    return Launched(proc, scratch)
