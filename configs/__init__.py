"""ml_collections configs: default.py, paper.py, tiny.py (each a get_config())."""

import importlib.util
import os

import ml_collections


def load(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of a config file given by path (what `--config` names)."""
    spec = importlib.util.spec_from_file_location("config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
