"""Configuration: detectron2-style ``CfgNode`` trees with FreeSeg's keys.

``get_cfg()`` returns every default; ``cfg.merge_from_file(path)`` reads a FreeSeg/detectron2
YAML file (``_BASE_`` inheritance, the safe eval-list form); ``cfg.merge_from_list(opts)``
applies command-line ``KEY VALUE`` overrides. See docs/config.md.
"""
from __future__ import annotations

from ..utils.errors import ConfigError
from .config import CfgNode
from .defaults import get_cfg
from .yaml_loader import load_yaml_with_base

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base"]
