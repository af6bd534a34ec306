"""Defender bodies, one file each; importing this package registers them."""

from extractgym.agents.defenders import gaussian_noise, hard_label, no_defence, rounding, top_k  # noqa: F401
