"""Metadata linker: link accounts that share a payment instrument, or a network exit together with a client
signature, and act on the connected components of at least ``min_cluster`` accounts (docs/sybil.md).

This is how providers' abuse teams find account farms. Thomas et al., "Trafficking Fraudulent Accounts: The Role of
the Underground Market in Twitter Spam and Abuse", USENIX Security 2013, found merchants' accounts by the
registration signals they shared (IP addresses, client signatures, naming patterns), and Twitter disabled the
linked accounts as a whole; Xiao, Freeman & Hwa, "Detecting Clusters of Fake Accounts in Online Social Networks",
AISec 2015 (LinkedIn), score *clusters* of accounts registered with shared features rather than accounts one by one;
payment providers link accounts through a shared card (Stripe Radar's "card shared across accounts" signals). The
model here is the graph of those papers: accounts are nodes, a shared strong value is an edge, and a connected
component is a cluster.

Edges (``links``): ``payment`` (the same instrument: a card is an identity) and ``network+client`` (the same exit
*and* the same client signature; either alone is shared legitimately by crowds: a corporate NAT, a popular app).
Components are kept incrementally (union-find), so linking costs O(1) amortised per account whatever how many there
are; accounts are linked in opening order from the books (each ledger entry read once), at the latest when one sends
its first request: a sign-up check. A component that reaches ``min_cluster`` accounts is acted on, and every
account that joins it later too.

Benign customers share too (docs/sybil.md: family cards, many users behind one corporate network with a popular
client): ``min_cluster`` above the size of their groups is what keeps them out; the false positives are counted per
customer by the referee.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.detection.linking import ClusterLinker, UnionFind
from extractgym.agents.registry import register_defender
from extractgym.envs.api import Account, DefenderView, Verdict

LINKS = ("payment", "network+client", "network", "client")


@register_defender("metadata-linker")
class MetadataLinker(ClusterLinker):
    """Shared-fingerprint components (payment instrument; network exit with client signature).

    Args:
        links: which shared values make an edge: ``payment``, ``network+client`` (default both), also ``network``
            or ``client`` alone (weak: crowds share them; for experiments).
        action, min_cluster: see :class:`~extractgym.agents.detection.linking.ClusterLinker`.
    Knobs: ``action`` and ``min_cluster``.
    """

    def __init__(self, links: list[str] | None = None, action: str = "ban", min_cluster: int = 10) -> None:
        super().__init__(action, min_cluster)
        links = ["payment", "network+client"] if links is None else list(links)
        unknown = [x for x in links if x not in LINKS]
        if not links or unknown:
            raise ValueError(f"links must name some of {', '.join(LINKS)}, got {links}")
        self.links = tuple(dict.fromkeys(links))

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.sets = UnionFind()
        self.first: dict[tuple[str, str], int] = {}  # (link, value) -> the first row that had it
        self.pending: dict[int, list[int]] = {}  # root -> rows of its component not acted on yet
        self.flagged: dict[int, int] = {}  # root of a component acted on -> its cluster number
        self._pos = 0  # ledger entries already read for openings

    def _keys(self, account_id: str) -> list[tuple[str, str]]:
        fp = self.view.identity(account_id)
        if fp is None:
            return []
        values = {"payment": fp.payment, "network": fp.network, "client": fp.client,
                  "network+client": f"{fp.network}|{fp.client}"}
        return [(link, values[link]) for link in self.links]

    def link(self, account_id: str, knobs: Mapping[str, Any]) -> int:
        """Link an account (once) by its fingerprint; act on its component if that is now large enough."""
        known = self.rows.get(account_id)
        if known is not None:
            return known
        r = self.row(account_id)
        self.sets.add(r + 1)
        self.pending[r] = [r]
        for key in self._keys(account_id):
            other = self.first.setdefault(key, r)
            if other != r:
                a, b = self.sets.find(r), self.sets.find(other)
                if a != b:
                    root = self.sets.union(a, b)
                    small = b if root == a else a
                    self.pending[root].extend(self.pending.pop(small))  # the smaller list moves: O(n log n) in all
                    if small in self.flagged:
                        self.flagged.setdefault(root, self.flagged.pop(small))
        root = self.sets.find(r)
        if root in self.flagged or self.sets.size[root] >= knobs["min_cluster"]:
            number = self.flagged.get(root)
            self.act(self.pending[root], knobs, f"{self.sets.size[root]} accounts share " + " / ".join(self.links),
                     number)
            self.flagged[root] = len(self.clusters) - 1 if number is None else number
            self.pending[root] = []
        return r

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int | Verdict:
        self.catch_up(knobs)
        self.link(account.id, knobs)
        return self.verdict(account, len(x))

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        self.catch_up(knobs)

    def catch_up(self, knobs: Mapping[str, Any]) -> None:
        """Link the accounts opened since the books were last read, in opening order (those that never send too):
        each ledger entry is read once."""
        for entry in self.view.ledger.since(self._pos):
            if entry.kind == "open":
                self.link(entry.account, knobs)
        self._pos = len(self.view.ledger)
