"""extractgym: model-extraction attackers vs prediction-API defenders, as a multi-agent gym.

Layers import one way: ``victims`` <- ``envs`` <- ``agents`` <- ``scenarios`` <- ``league`` <- ``training`` <-
``serve`` <- ``cli`` (``tests/test_layers.py`` keeps it so; docs/architecture.md describes each).
Importing the package registers the Gymnasium ids ``extractgym/Attacker-v0`` and
``extractgym/Defender-v0`` (lazy entry points: nothing heavy is imported here), with vector entry points
(``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``: K episodes in lockstep).
"""

from __future__ import annotations

__version__ = "0.1.0"


def _register() -> None:
    import gymnasium

    for seat in ("Attacker", "Defender"):
        env_id = f"extractgym/{seat}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=f"extractgym.scenarios.gym_entry:make_{seat.lower()}_env",
                               vector_entry_point=f"extractgym.scenarios.gym_entry:make_{seat.lower()}_vec_env",
                               kwargs={"scenario": "digits-basic"})


_register()
