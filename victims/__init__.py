"""Victims: offline datasets, architectures, the shared training loop, the victim zoo and model loaders.

``load_victim(name, seed)`` (``victims/zoo.py``) trains a registered victim once and caches it;
``from_torch_model`` / ``from_huggingface`` (``victims/loaders.py``) wrap a user's own model.
This layer imports nothing from the rest of extractgym.
"""
