"""The operator's secret: what makes a contest task's victim and test set impossible to rebuild from the package.

Everything else in extractgym is public and deterministic: anyone with the package can train ``digits-cnn`` from
seed 0 and read sklearn's digits, so a contestant could score perfectly without a query. A *secret task*
(``digits-secret``, :mod:`extractgym.victims.datasets`) draws its labels, its inputs' noise and its split from this
secret, and its victim's initial weights too; a contestant without the secret gets another task altogether.

The secret is 32 random bytes in a file only the operator's process reads: ``$EXTRACTGYM_SECRET_FILE``, else
``secret.key`` in the model cache (created on first use, mode 0600). Isolated bodies never see it (the sandbox
hides the cache and this file, and clears the environment), nor does an HTTP contestant. The same secret gives the
same task, victim and figures (keep the file to reproduce a contest); :func:`secret_id` names which secret a result
was measured under without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _secrets
from pathlib import Path

from extractgym.victims.cache import cache_root

KEY_BYTES = 32
PUBLIC_KEY = b"extractgym public stand-in: anyone can rebuild what this key makes"


class SecretUnavailable(RuntimeError):
    """The secret cannot be read here (an isolated body's sandbox, or an unreadable key file)."""


def secret_file() -> Path:
    return Path(os.environ.get("EXTRACTGYM_SECRET_FILE") or cache_root() / "secret.key")


def secret_paths() -> tuple[str, ...]:
    """Where the secret lives (what the sandbox hides)."""
    return (str(secret_file()),)


def secret_key() -> bytes:
    """The operator's secret (created on first use); :class:`SecretUnavailable` inside an isolated body."""
    if os.environ.get("EXTRACTGYM_SANDBOX"):
        raise SecretUnavailable("the contest secret is not available to an isolated body")
    path = secret_file()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create(path)
    except OSError as e:
        raise SecretUnavailable(f"cannot read the secret {path}: {e.strerror or e}") from None
    if len(data) != KEY_BYTES:
        raise SecretUnavailable(f"the secret {path} holds {len(data)} bytes, not {KEY_BYTES}: remove it to make a new "
                                f"one (results measured under the old one can no longer be reproduced)")
    return data


def _create(path: Path) -> bytes:
    data = _secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes()
    except OSError as e:
        raise SecretUnavailable(f"cannot create the secret {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def derive(key: bytes, *purpose: object) -> int:
    """A 63-bit seed for ``purpose`` from ``key`` (HMAC-SHA256): independent streams for labels, noise, split,
    weights, none revealing another or the key."""
    msg = "\0".join(map(str, purpose)).encode()
    return int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:8], "little") >> 1


def secret_id(key: bytes) -> str:
    """A short public name of a key (what a published contest result quotes)."""
    return "public" if key == PUBLIC_KEY else hmac.new(key, b"id", hashlib.sha256).hexdigest()[:12]
