"""The ``extractgym`` command line: the front door, above every layer (nothing below imports it).

One module per command group, each adding its commands to :data:`~extractgym.cli.common.app`; every module of this
package is imported here, so a new command group is one new file:

* :mod:`~extractgym.cli.play`: ``run``, ``list``, ``validate``;
* :mod:`~extractgym.cli.evaluation`: ``eval``;
* :mod:`~extractgym.cli.training`: ``train``, ``psro``, ``rllib``;
* :mod:`~extractgym.cli.league`: ``tournament``, ``tournament-report``;
* :mod:`~extractgym.cli.service`: ``serve``;
* :mod:`~extractgym.cli.stress`: ``stress``.

Commands import their layer's modules inside the function, so ``extractgym --help`` and ``run`` stay quick to start.
Bad input ends in :func:`~extractgym.cli.common.fail`: a message naming the problem and exit code 2.
"""

import importlib
import pkgutil

from extractgym.cli.common import app

_FIRST = ("play", "evaluation", "training", "league", "service")  # the order `extractgym --help` lists them in
_found = {m.name for m in pkgutil.iter_modules(__path__)} - {"common", "__main__"}
for _name in (*(n for n in _FIRST if n in _found), *sorted(_found - set(_FIRST))):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["app"]
