"""Reading detectron2/FreeSeg YAML config files: ``_BASE_`` inheritance and the one eval tag.

detectron2 reads configs with ``yaml.unsafe_load`` (any Python object, any code). We use a
``yaml.SafeLoader`` subclass that knows exactly one extra tag,
``!!python/object/apply:eval``, whose argument goes through :func:`safe_eval_list`; every other
``!!python/...`` tag is a :class:`ConfigError`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..utils.errors import ConfigError
from .safe_eval import safe_eval_list

BASE_KEY = "_BASE_"
_EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader + the eval-list tag. ``source`` names the file in error messages."""

    source = "config"


def _construct_eval(loader: _ConfigLoader, node: yaml.Node) -> list[Any]:
    where = f"{loader.source} line {node.start_mark.line + 1}"
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != 1:
        raise ConfigError(f"{where}: !!python/object/apply:eval takes one string, like [\"[...]\"]")
    text = loader.construct_object(node.value[0])
    if not isinstance(text, str):
        raise ConfigError(f"{where}: !!python/object/apply:eval takes one string, got {text!r}")
    return safe_eval_list(text, where)


def _reject_python_tag(loader: _ConfigLoader, suffix: str, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    raise ConfigError(
        f"{loader.source} line {line}: YAML tag !!python/{suffix} is not allowed (it would run "
        "code); only !!python/object/apply:eval with a list comprehension is accepted"
    )


_ConfigLoader.add_constructor(_EVAL_TAG, _construct_eval)
_ConfigLoader.add_multi_constructor(_PYTHON_TAG_PREFIX, _reject_python_tag)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Load one YAML file (no ``_BASE_`` handling) into a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path}. Check the path (FreeSeg's configs are under configs/)"
        )
    loader_cls = type("_Loader", (_ConfigLoader,), {"source": str(path)})
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader_cls)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not a text (UTF-8) YAML file; pass the config (.yaml), not a checkpoint or other "
            "binary file"
        ) from None
    if data is None:  # only comments or nothing: running on the defaults would be a silent mistake
        raise ConfigError(f"config file {path} is empty; pass a FreeSeg config (they are under configs/)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def load_yaml_with_base(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load ``path`` and merge it over its ``_BASE_`` file(s), recursively.

    ``_BASE_`` is a path (or list of paths) relative to the directory of the file that names it
    (absolute and ``~`` paths are used as they are), as in detectron2. Later files override
    earlier ones key by key; nested mappings are merged, other values replaced.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"_BASE_ cycle in config files: {cycle}")
    cfg = load_yaml(path)
    bases = cfg.pop(BASE_KEY, None)
    if bases is None:
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _BASE_ must be a file path or a list of file paths")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{path}: _BASE_ file not found: {base} (looked for {base_path})")
        merge_dicts(merged, load_yaml_with_base(base_path, (*_chain, resolved)))
    merge_dicts(merged, cfg)
    return merged


def merge_dicts(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``src`` into ``dst`` in place (mappings merged, other values replaced)."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            merge_dicts(dst[key], value)
        else:
            dst[key] = value
    return dst
