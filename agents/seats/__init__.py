"""The seat boundary: what stands between a body and the API.

* :mod:`~extractgym.agents.seats.channel`: the one send pipeline every body buys answers through (account policy,
  blinding, filter, adapt stages);
* :mod:`~extractgym.agents.seats.seat`: an attacker seat, a body plus the channel the factory assembled;
* :mod:`~extractgym.agents.seats.isolation`: a body in its own process, reaching the API only over a pipe.
"""
