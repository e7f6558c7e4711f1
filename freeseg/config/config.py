"""``CfgNode``: a nested dict with attribute access, typed merging and freezing.

detectron2 built its CfgNode on ``yacs`` + ``fvcore``; neither is maintained for current Python
(and detectron2 itself does not install here), so this is our own small version with the same
user-facing behaviour: ``merge_from_file`` (``_BASE_`` inheritance, YAML), ``merge_from_list``
(``KEY VALUE`` pairs from a command line), ``freeze/defrost/clone/dump``. It differs in being
stricter where yacs was unsafe or confusing: YAML is loaded safely (see ``yaml_loader``), errors
are one-line :class:`ConfigError` messages naming the key and the closest valid key, an ``int``
is accepted where a ``float`` is expected, and a string default is never ``literal_eval``-ed
into another type.
"""
from __future__ import annotations

import ast
import copy
import os
import re
from typing import Any, Iterator

import yaml

from ..utils.errors import ConfigError, closest
from .yaml_loader import BASE_KEY, load_yaml_with_base

_REPR_LIMIT = 80
_OPTION = re.compile(r"--[A-Za-z]")
# List values whose length the model relies on, and why (a wrong one would surface as a
# checkpoint mismatch or a shape error deep inside the model).
_LENGTHS = {"MODEL.PIXEL_MEAN": (3, "one per RGB channel"), "MODEL.PIXEL_STD": (3, "one per RGB channel")}


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


class CfgNode(dict):
    """A config tree: ``cfg.MODEL.DEVICE`` is ``cfg["MODEL"]["DEVICE"]``.

    Nested mappings become ``CfgNode`` s. Keys are fixed by the defaults (``get_cfg()``): merging
    an unknown key is an error. New keys can be added by attribute assignment while the node is
    not frozen (that is how the defaults are declared).
    """

    def __init__(self, init: dict[str, Any] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_frozen", False)
        for key, value in (init or {}).items():
            self[key] = value

    # ---- dict / attribute access ---------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            hint = closest(name, self.keys())
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise AttributeError(f"config has no key {name!r}{extra}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_mutable(f"set {key}")
        if isinstance(value, dict) and not isinstance(value, CfgNode):
            value = CfgNode(value)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._check_mutable(f"delete {key}")
        super().__delitem__(key)

    def __delattr__(self, name: str) -> None:
        del self[name]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self._check_mutable(f"pop {key}")
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._check_mutable("popitem")
        return super().popitem()

    def clear(self) -> None:
        self._check_mutable("clear")
        super().clear()

    def __repr__(self) -> str:
        return f"CfgNode({dict.__repr__(self)})"

    def __str__(self) -> str:
        return self.dump()

    # ---- freezing / copying --------------------------------------------------------------
    def freeze(self) -> CfgNode:
        """Make this node and all sub-nodes immutable; returns self."""
        self._set_frozen(True)
        return self

    def defrost(self) -> CfgNode:
        """Make this node and all sub-nodes mutable again; returns self."""
        self._set_frozen(False)
        return self

    def is_frozen(self) -> bool:
        # .get: unpickled/deep-copied nodes are rebuilt without calling __init__.
        return self.__dict__.get("_frozen", False)

    def _set_frozen(self, frozen: bool) -> None:
        object.__setattr__(self, "_frozen", frozen)
        for value in self.values():
            if isinstance(value, CfgNode):
                value._set_frozen(frozen)

    def _check_mutable(self, action: str) -> None:
        if self.is_frozen():
            raise ConfigError(f"config is frozen, cannot {action}; call cfg.defrost() first")

    def clone(self) -> CfgNode:
        """A deep copy (keeps the frozen state)."""
        return copy.deepcopy(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> CfgNode:
        node = CfgNode()
        for key, value in self.items():
            dict.__setitem__(node, key, copy.deepcopy(value, memo))
        object.__setattr__(node, "_frozen", self.is_frozen())
        return node

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle as (plain dict, frozen flag): DataLoader workers and spawn() processes get a
        # faithful copy, including frozen sub-nodes.
        return (_rebuild, (self.to_dict(), self.is_frozen()))

    # ---- conversion ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (tuples kept as tuples)."""
        return {k: v.to_dict() if isinstance(v, CfgNode) else copy.deepcopy(v) for k, v in self.items()}

    def dump(self, **kwargs: Any) -> str:
        """YAML text (sorted keys, tuples as lists) that ``merge_from_file`` reads back equal."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        kwargs.setdefault("default_flow_style", False)
        kwargs.setdefault("sort_keys", True)
        kwargs.setdefault("allow_unicode", True)
        return yaml.safe_dump(plain(self), **kwargs)

    def full_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key path, groups included (``MODEL``, ``MODEL.DEVICE``, ...)."""
        for key, value in self.items():
            yield prefix + key
            if isinstance(value, CfgNode):
                yield from value.full_keys(prefix + key + ".")

    # ---- merging ---------------------------------------------------------------------------
    def merge_from_file(self, path: str | os.PathLike) -> CfgNode:
        """Merge a YAML config (with its ``_BASE_`` chain) into this config; returns self."""
        data = load_yaml_with_base(path)
        version = data.get("VERSION", self.get("VERSION"))
        if "VERSION" in self and version != self["VERSION"]:
            raise ConfigError(
                f"{path}: config VERSION {version!r} is not supported; only VERSION "
                f"{self['VERSION']} (detectron2's current format) is"
            )
        self._merge_dict(data, prefix="", source=str(path), root=self)
        return self

    def merge_from_other_cfg(self, other: dict[str, Any]) -> CfgNode:
        """Merge another config (or nested dict) into this one with the same checks."""
        self._merge_dict(dict(other), prefix="", source="merged config", root=self)
        return self

    def merge_from_list(self, opts: list[str] | tuple[str, ...]) -> CfgNode:
        """Merge ``["KEY", "VALUE", ...]`` (command-line style); string values are parsed
        as Python literals where the default is not a string (``"(640, 640)"``, ``"True"``)."""
        flags = [o for o in opts if isinstance(o, str) and _OPTION.match(o)]
        if flags:  # argparse stops reading options at the first KEY: a later one lands here
            raise ConfigError(
                f"option {flags[0]} comes after the KEY VALUE config overrides, where it is read as one of "
                "them; put every option (--...) before the first KEY VALUE pair"
            )
        if len(opts) % 2:
            raise ConfigError(
                f"config overrides must be KEY VALUE pairs, got an odd number ({len(opts)}): "
                f"{' '.join(map(str, opts))}"
            )
        for full_key, raw in zip(opts[0::2], opts[1::2]):
            if not isinstance(full_key, str) or not full_key:
                raise ConfigError(f"config override key must be a non-empty string, got {full_key!r}")
            if full_key == BASE_KEY:
                raise ConfigError("_BASE_ cannot be set from the command line; use --config-file")
            node = self
            parts = full_key.split(".")
            for depth, part in enumerate(parts[:-1]):
                child = node.get(part)
                if part in node and not isinstance(child, CfgNode):
                    raise ConfigError(
                        f"config key {'.'.join(parts[: depth + 1])} is a value, not a group, so "
                        f"{full_key} does not exist"
                    )
                if not isinstance(child, CfgNode):
                    raise self._unknown_key(".".join(parts[: depth + 1]), "command line")
                node = child
            leaf = parts[-1]
            if leaf not in node:
                raise self._unknown_key(full_key, "command line")
            if isinstance(node[leaf], CfgNode):
                raise ConfigError(
                    f"config key {full_key} is a group of keys; override one of them, "
                    f"e.g. {full_key}.{next(iter(node[leaf]), 'KEY')}"
                )
            node[leaf] = coerce_value(raw, node[leaf], full_key, "command line")
        return self

    def _merge_dict(self, data: dict[str, Any], prefix: str, source: str, root: CfgNode) -> None:
        self._check_mutable(f"merge {source}")
        for key, value in data.items():
            full_key = prefix + str(key)
            if key not in self:
                raise root._unknown_key(full_key, source)
            current = self[key]
            if isinstance(current, CfgNode):
                if value is None:
                    continue  # an empty section ("MODEL:" with every key commented out)
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"config key {full_key} is a group of keys but {source} sets it to "
                        f"{_short(value)}; write it as a mapping ({full_key}: {{KEY: value}})"
                    )
                current._merge_dict(value, full_key + ".", source, root)
            else:
                self[key] = coerce_value(value, current, full_key, source)

    def _unknown_key(self, full_key: str, source: str) -> ConfigError:
        keys = list(self.full_keys())
        parent = full_key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == parent]
        hint = _closest_key(full_key, siblings) or _closest_key(full_key, keys)
        extra = f"; did you mean {hint}?" if hint else "; see docs/config.md for the valid keys"
        return ConfigError(f"unknown config key {full_key} (from {source}){extra}")


def _closest_key(name: str, candidates: list[str]) -> str | None:
    """Case-insensitive :func:`closest` (``model.device`` -> ``MODEL.DEVICE``)."""
    by_upper = {c.upper(): c for c in candidates}
    match = closest(name.upper(), by_upper)
    return by_upper[match] if match else None


def _rebuild(data: dict[str, Any], frozen: bool) -> CfgNode:
    node = CfgNode(data)
    return node.freeze() if frozen else node


def coerce_value(value: Any, default: Any, full_key: str, source: str) -> Any:
    """Check/convert a new value against the default's type, as yacs did (plus int -> float).

    Strings are parsed with ``ast.literal_eval`` unless the default is itself a string
    (YAML and command lines write tuples as ``"(640, 640)"``). Allowed conversions: list <->
    tuple, int -> float; a key whose default is None takes any value, None is accepted only
    there (``MAX_ITER: null`` would fail much later, in the middle of a run).
    """
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except SyntaxError as exc:  # "(512, 512": a value that was meant as a literal
            if default is not None:
                raise ConfigError(
                    f"config key {full_key}: {_short(value)} does not parse ({exc.msg}) (from {source}); "
                    f"write a value of type {_type_name(default)}, like {_short(default)}"
                ) from None
        except (ValueError, TypeError, MemoryError, RecursionError):
            pass  # not a literal: keep the string (valid only where the default is None)
    if isinstance(value, dict):
        value = CfgNode(value) if default is None else value
    if value is None and default is not None:
        fix = ' (write "" for none)' if isinstance(default, str) else ""
        raise ConfigError(
            f"config key {full_key} is empty (null / None) (from {source}); it needs a value of type "
            f"{_type_name(default)}, like {_short(default)}{fix}"
        )
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        length, why = _LENGTHS.get(full_key, (None, ""))
        if length is not None and len(value) != length:
            raise ConfigError(
                f"config key {full_key} needs {length} values ({why}), got {_short(value)} (from {source})"
            )
        return _like(value, default)
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, float) and type(value) is int:
        return float(value)
    hint = ""
    if isinstance(default, (list, tuple)):
        hint = f' (write a sequence, e.g. "{_short(type(default)([value]))}")'
    elif isinstance(default, bool):
        hint = " (write True or False)"
    raise ConfigError(
        f"config key {full_key}: expected {_type_name(default)} like {_short(default)}, "
        f"got {_type_name(value)} {_short(value)} (from {source}){hint}"
    )


def _like(value: list | tuple, default: list | tuple) -> list | tuple:
    """``value`` with the container types of ``default``, nested ones included (YAML and
    literal command-line values have lists where the defaults have tuples of tuples)."""
    inner = {type(d) for d in default if isinstance(d, (list, tuple))}
    if len(inner) == 1 and len(inner) == len({type(d) for d in default}):
        kind = inner.pop()
        value = [kind(v) if isinstance(v, (list, tuple)) else v for v in value]
    return type(default)(value)
