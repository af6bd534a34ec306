"""The simulation: prediction API, budgets, ledger, benign customers, referee and the game loop.

Only ``parallel_env.py`` (PettingZoo) and ``gym_wrappers.py`` (Gymnasium) import a gym library; everything
below them is plain Python and numpy. Agents act through :class:`~extractgym.envs.api.Client` (attackers)
and the :class:`~extractgym.envs.protocols.DefenderBody` hooks (defenders).
"""
