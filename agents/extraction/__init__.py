"""What the attackers share: the surrogate and its transfer set, Jacobian-based and adversarial augmentation, and
pool-based active-learning selection."""
