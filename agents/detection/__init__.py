"""What the defenders share: bounded per-account histories, distance kernels, similarity encoders, the stateful
detector and query-cache bases, Blacklight's hash index, and the owner's own stand-in models."""
