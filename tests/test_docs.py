"""The docs' code runs: every ```python block of README.md and docs/*.md, each in a fresh interpreter.

A block whose first line is ``# not run: REASON`` is skipped (say why: it trains for minutes, needs Ray, ...).
Every link to a file of the repository from those documents must resolve, so a fresh clone has every document
the README and the docs refer to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            out.append((f"{doc.relative_to(ROOT)}#{i}", m.group(1)))
    return out


def test_the_docs_have_examples() -> None:
    assert len(_blocks()) >= 5


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_doc_example_runs(where: str, code: str, tmp_path: Path) -> None:
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    if first.startswith("# not run:"):
        pytest.skip(first)
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{where} failed:\n{result.stderr[-3000:]}"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.S | re.M)  # links are read outside code


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_links_to_the_repository_resolve(doc: Path) -> None:
    broken = [target for target in LINK.findall(CODE.sub("", doc.read_text(encoding="utf-8")))
              if not target.startswith(("http://", "https://", "mailto:")) and not (doc.parent / target).exists()]
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"
