"""A real prediction service: a scenario's API, defences and ledger over HTTP (``extractgym serve``).

* :mod:`extractgym.serve.state`: the served game, its lock and durable books (no HTTP);
* :mod:`extractgym.serve.store`: the SQLite database (WAL, ``synchronous=FULL``, append-only tables);
* :mod:`extractgym.serve.replay`: rebuilding accounts, wallets, bans and detectors from it;
* :mod:`extractgym.serve.app`: the FastAPI routes and the body-size limit;
* :mod:`extractgym.serve.contest`: scoring submitted surrogate snapshots on the hidden test set.

Attackers reach a served API (or any JSON endpoint) through :mod:`extractgym.envs.remote`.
"""

from __future__ import annotations

from extractgym.serve.state import ServerConfig, ServiceServer

__all__ = ["ServerConfig", "ServiceServer"]
