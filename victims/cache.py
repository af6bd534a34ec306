"""On-disk cache for trained victims and encoder outputs, keyed by everything that determines them.

Location: ``$EXTRACTGYM_CACHE`` or ``~/.cache/extractgym``. Never committed; rebuilt from seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Bump when a change to data, architectures or training would make old cache entries wrong.
CACHE_VERSION = 2


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("EXTRACTGYM_CACHE") or Path.home() / ".cache" / "extractgym")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(**fields: object) -> str:
    """A short stable hash of ``fields`` (JSON-serialisable values) plus :data:`CACHE_VERSION`."""
    blob = json.dumps({"_v": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]
