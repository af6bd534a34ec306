"""``python -m extractgym.cli``: the command line (what the ``extractgym`` script runs)."""

from extractgym.cli import app

app()
