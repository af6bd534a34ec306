"""A real prediction service: a scenario's API, defences and ledger over HTTP (``extractgym serve``).

* :mod:`extractgym.serve.state`: the served game, its lock and durable books (no HTTP);
* :mod:`extractgym.serve.store`: the SQLite database (WAL, group commit, append-only tables);
* :mod:`extractgym.serve.replay`: rebuilding accounts, wallets, bans and detectors from it;
* :mod:`extractgym.serve.snapshot`: the state stored every few thousand entries, so a restart replays only the tail;
* :mod:`extractgym.serve.app`: the app factory and the gate (authentication and body limits before the body);
* :mod:`extractgym.serve.routes`: the routes, one file per resource; :mod:`extractgym.serve.common` what they share;
* :mod:`extractgym.serve.contest`: scoring submitted surrogate snapshots on the hidden test set.

Attackers reach a served API (or any JSON endpoint) through :mod:`extractgym.envs.remote`.
"""

from __future__ import annotations

from extractgym.serve.state import ServerConfig, ServiceServer

__all__ = ["ServerConfig", "ServiceServer"]
