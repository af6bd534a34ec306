"""One loader for every file a user hands extractgym: scenarios, tournament specs, policy files, snapshots, databases.

Each guard here is checked *before* the file is interpreted, and every refusal names the file and the problem (the
caller passes its own error class: ``ScenarioError``, ``LeagueError``, ``PolicyError``...):

* **what it is**: a regular file (not a folder, a FIFO or ``/dev/zero``), read with a byte limit that holds even
  if the file grows while it is read;
* **text**: UTF-8 (the first bad byte is named), at most :data:`MAX_TEXT_BYTES`;
* **YAML**: parsed safely (no tags that build objects), then refused if it expands beyond :data:`MAX_VALUES`
  values (anchors and aliases count each time they are used) or :data:`MAX_DEPTH` levels, before anything walks it
  in full; huge integer literals and self-referencing aliases are named, not tracebacks;
* **archives** (:class:`SafeZip`): at most :data:`MAX_MEMBERS` members with plain names, each member's declared
  size and compression ratio checked from the central directory before anything is extracted, and every member
  read in bounded chunks that stop at its limit whatever the directory claims;
* **paths** (:func:`inside`): a path that must stay under its root (no ``..``, no symlink out);
* **numbers** (:func:`finite`): finite and in range;
* **databases** (:func:`sqlite_file`): an SQLite file (its header checked) or a new file in a writable folder.

Error messages never echo more than a short prefix of a bad value.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

MAX_TEXT_BYTES = 1 << 20
MAX_VALUES = 100_000
MAX_DEPTH = 50
MAX_MEMBERS = 64
MAX_RATIO = 200  # uncompressed / compressed size of one archive member (a zip bomb's is in the thousands)
SQLITE_HEADER = b"SQLite format 3\x00"


class FileError(ValueError):
    """A file that cannot be used, naming it and the problem."""


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (error messages never echo unbounded input)."""
    return clip(repr(value), limit)


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def read_bytes(path: str | Path, what: str, limit: int, error: type[Exception] = FileError) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} file {path} not found") from None
    except OSError as e:
        raise error(f"cannot read {what} file {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} file {path} is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} file {path} is not a regular file")
    if st.st_size > limit:
        raise error(f"{path}: the file is {st.st_size} bytes; a {what} file may have at most {limit}")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {what} file {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path}: the file grew past {limit} bytes while it was read")
    return data


def decode(raw: bytes, where: str, error: type[Exception] = FileError) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r})") from None


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES, error: type[Exception] = FileError) -> str:
    return decode(read_bytes(path, what, limit, error), str(path), error)


def parse_yaml(text: str, where: str, error: type[Exception] = FileError, max_values: int = MAX_VALUES,
               max_depth: int = MAX_DEPTH) -> Any:
    """YAML text to plain data (``yaml.safe_load``), bounded (:func:`check_size`); errors name ``where``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{where}: malformed YAML{at}: {short(getattr(e, 'problem', None) or e, 200)}") from None
    except RecursionError:
        raise error(f"{where}: the YAML is nested too deeply (at most {max_depth} levels)") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer literal of more digits than Python converts
        raise error(f"{where}: a value cannot be read ({short(str(e), 160)})") from None
    check_size(data, where, error, max_values, max_depth)
    return data


def read_yaml(path: str | Path, what: str, error: type[Exception] = FileError,
              limit: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """A YAML mapping from the file ``path``, bounded (size, UTF-8, values, depth) and named in every error."""
    data = parse_yaml(read_text(path, what, limit, error), str(path), error)
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be a YAML mapping, got {type(data).__name__}")
    return data


def check_size(data: Any, where: str, error: type[Exception] = FileError, max_values: int = MAX_VALUES,
               max_depth: int = MAX_DEPTH) -> None:
    """Refuse data that expands (YAML aliases count each time they are used) beyond ``max_values`` values or
    ``max_depth`` levels, before anything walks it in full."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_values:
            raise error(f"{where}: the data expands to more than {max_values} values (YAML aliases included)")
        if depth > max_depth:
            raise error(f"{where}: the data is nested more than {max_depth} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node)
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str) and len(node) > MAX_TEXT_BYTES:
            raise error(f"{where}: a string of {len(node)} characters is too long")


def inside(path: str | Path, root: str | Path, what: str, error: type[Exception] = FileError) -> Path:
    """``path`` resolved (relative paths from ``root``), refused unless it stays under ``root``."""
    root = Path(root).resolve()
    full = (root / Path(path)).resolve()
    if full != root and root not in full.parents:
        raise error(f"{what} {short(str(path))} leads outside {root}")
    return full


def finite(value: Any, what: str, low: float = -math.inf, high: float = math.inf,
           error: type[Exception] = FileError) -> float:
    """``value`` as a finite float in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{what} must be a number, got {short(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise error(f"{what} is too large") from None
    if not math.isfinite(v):
        raise error(f"{what} must be finite, got {value!r}")
    if not low <= v <= high:
        raise error(f"{what} must be in [{low:g}, {high:g}], got {short(value)}")
    return v


class SafeZip:
    """A zip archive opened with its members checked from the central directory before anything is extracted.

    Args:
        path: the archive.
        what: what it is, for messages (``policy``).
        limits: member name -> most bytes it may hold (members not named: ``default_limit``).
        total: most bytes all members may hold together.
        error: the error class to raise.
    """

    def __init__(self, path: str | Path, what: str, limits: dict[str, int] | None = None,
                 default_limit: int = MAX_TEXT_BYTES, total: int = 256 * 2**20, max_file: int = 256 * 2**20,
                 error: type[Exception] = FileError) -> None:
        self.path, self.what, self.error = Path(path), what, error
        self.limits, self.default_limit = dict(limits or {}), default_limit
        read_bytes_ok = self._regular(max_file)
        try:
            self.archive = zipfile.ZipFile(read_bytes_ok)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
            raise error(f"{self.path}: not a {what} file ({type(e).__name__}: {short(str(e), 120)})") from None
        infos = self.archive.infolist()
        if len(infos) > MAX_MEMBERS:
            self.archive.close()
            raise error(f"{self.path}: {len(infos)} members in the archive; a {what} file has at most {MAX_MEMBERS}")
        declared = 0
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or "\x00" in name:
                self.close()
                raise error(f"{self.path}: archive member {short(name)} has an unsafe name")
            limit = self.limits.get(name, default_limit)
            if info.file_size > limit:
                self.close()
                raise error(f"{self.path}: member {short(name)} holds {info.file_size} bytes; at most {limit}")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
                self.close()
                raise error(f"{self.path}: member {short(name)} expands {info.file_size // info.compress_size}-fold "
                            f"(a zip bomb?); at most {MAX_RATIO}-fold")
            declared += info.file_size
            self.members[name] = info
        if declared > total:
            self.close()
            raise error(f"{self.path}: the archive's members hold {declared} bytes; at most {total}")

    def _regular(self, max_file: int) -> Any:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise self.error(f"{self.what} file {self.path} not found") from None
        except OSError as e:
            raise self.error(f"cannot read {self.what} file {self.path}: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise self.error(f"{self.what} {self.path} is not a file")
        if st.st_size > max_file:
            raise self.error(f"{self.path}: the file is {st.st_size} bytes; a {self.what} file may have at most "
                             f"{max_file}")
        try:
            return open(self.path, "rb")  # noqa: SIM115  # owned by the ZipFile, closed with it
        except OSError as e:
            raise self.error(f"cannot read {self.what} file {self.path}: {e.strerror or e}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def names(self) -> list[str]:
        return list(self.members)

    def read(self, name: str) -> bytes:
        """A member's bytes, read in chunks that stop at its limit whatever its header claims."""
        if name not in self.members:
            raise self.error(f"{self.path}: no {name} in the {self.what} file")
        limit = self.limits.get(name, self.default_limit)
        out = bytearray()
        try:
            with self.archive.open(self.members[name]) as f:
                while chunk := f.read(min(1 << 20, limit + 1 - len(out))):
                    out += chunk
                    if len(out) > limit:
                        raise self.error(f"{self.path}: member {name} expands past {limit} bytes")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            if isinstance(e, self.error):
                raise
            raise self.error(f"{self.path}: member {name} cannot be read ({type(e).__name__}: "
                             f"{short(str(e), 120)})") from None
        return bytes(out)

    def close(self) -> None:
        archive = getattr(self, "archive", None)
        if archive is not None:
            fp = archive.fp
            archive.close()
            if fp is not None:
                fp.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sqlite_file(path: str | Path, what: str = "database", error: type[Exception] = FileError) -> Path:
    """``path`` as an SQLite file to open: an existing one must be a regular file that starts with SQLite's header
    (or is empty); a new one needs an existing, writable folder."""
    path = Path(path)
    if path.exists():
        if path.is_dir():
            raise error(f"{what} {path} is a folder, not a file")
        if not path.is_file():
            raise error(f"{what} {path} is not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
        if head and head != SQLITE_HEADER:
            raise error(f"{what} {path} is not an SQLite database (it starts with {head[:8]!r})")
        return path
    folder = path.absolute().parent
    if not folder.is_dir():
        raise error(f"{what} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{what} {path}: the folder {folder} is not writable")
    return path
