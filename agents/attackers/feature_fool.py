"""CloudLeak's FeatureFool extraction: Jacobian-based augmentation with feature-space adversarial queries.

Yu et al., "CloudLeak: Large-Scale Deep Learning Models Stealing Through Adversarial Examples", NDSS 2020
(https://www.ndss-symposium.org/ndss-paper/cloudleak-large-scale-deep-learning-models-stealing-through-adversarial-examples/,
seed 004; its loss as written in seed 003 §III-A2, Eq. 1-2). The attacker labels a seed set from its own pool,
then each generation perturbs every source ``x`` towards the substitute's most likely other class ``t``:
``x'`` minimises ``||x - x'||_2 + lambda * Triplet(x, x', x_t)`` on the substitute's penultimate features, where
``x_t`` is a transfer-set sample the substitute labels ``t`` (:func:`extractgym.agents.extraction.augment.feature_fool`,
with Algorithm 2's signed steps). The loop, budget handling and knobs are those of
:class:`~extractgym.agents.attackers.jacobian.JacobianAttacker` (``method="feature-fool"``); CloudLeak queries
one adversarial example per source, so ``n_targets`` defaults to 1.
"""

from __future__ import annotations

from extractgym.agents.attackers.jacobian import JacobianAttacker
from extractgym.agents.registry import ATTACKERS, register_preset

register_preset(ATTACKERS, "feature-fool", JacobianAttacker, """\
    FeatureFool (CloudLeak) queries in the JBA loop of seed 003 Algorithm 1.

    Args: those of :class:`~extractgym.agents.attackers.jacobian.JacobianAttacker` without ``method``; ``eps`` is
    the signed step per iteration (fraction of the input range, default 0.01) and ``attack_steps`` the
    iterations (default 30).
    """, method="feature-fool", switch_method=False)
