"""Data set and metadata registries, named as in detectron2 so that FreeSeg users feel at home.

A data set is registered as a function returning a list of dicts (detectron2's "dataset dicts");
its metadata is a :class:`Metadata` holding class names, flags and paths. Registering never
touches the disk: functions run only when the data set is loaded.
"""
from __future__ import annotations

from typing import Any, Callable

from ..utils.errors import FreeSegError, closest


class Metadata:
    """Attribute bag for one data set. Setting an attribute twice with another value is an error.

    Common attributes: ``stuff_classes`` (all class names, in contiguous-id order),
    ``thing_classes``, ``thing_dataset_id_to_contiguous_id``,
    ``stuff_dataset_id_to_contiguous_id``, ``trainable_flag`` (1 = seen/base, 0 = unseen),
    ``evaluation_set`` (name -> list of contiguous ids, e.g. {"base": [...]}),
    ``ignore_label``, ``label_divisor``, ``stuff_colors``, ``thing_colors``,
    ``evaluator_type``, ``image_root``, ``sem_seg_root``, ``panoptic_root``,
    ``panoptic_json``, ``json_file``.
    """

    def __init__(self, name: str = "") -> None:
        object.__setattr__(self, "name", name)

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, value)
        if old is not value and old != value:
            raise FreeSegError(
                f"metadata '{key}' of data set '{self.name}' is already set to another value"
            )
        object.__setattr__(self, key, value)

    def __getattr__(self, key: str) -> Any:
        # Only reached when the attribute is missing.
        self._require_registered()
        raise AttributeError(
            f"metadata of data set '{self.__dict__.get('name', '')}' has no '{key}' "
            f"(available: {sorted(k for k in self.__dict__ if k != 'name')})"
        )

    def set(self, **kwargs: Any) -> "Metadata":
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        self._require_registered()
        return self.__dict__.get(key, default)

    def _require_registered(self) -> None:
        """Reading the metadata of a name nothing registered (``MetadataCatalog.get`` creates an
        empty entry, for ``.set``) is a typo in the config: say so, not "has no stuff_classes"."""
        if self.__dict__.keys() == {"name"}:
            DatasetCatalog.require(self.__dict__["name"])

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _DatasetCatalog(dict):
    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        if name in self:
            raise FreeSegError(f"data set '{name}' is already registered")
        self[name] = func

    def get(self, name: str) -> list[dict]:  # type: ignore[override]
        self.require(name)
        return self[name]()

    def require(self, name: str) -> None:
        """FreeSegError naming close registered names when ``name`` is not registered."""
        if name not in self:
            hint = closest(name, self.keys())
            raise FreeSegError(
                f"data set '{name}' is not registered"
                + (f"; did you mean '{hint}'?" if hint else "")
                + " (see `freeseg prepare --list` for the built-in ones)"
            )

    def list(self) -> list[str]:  # type: ignore[override]
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


class _MetadataCatalog(dict):
    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if name not in self:
            self[name] = Metadata(name)
        return self[name]

    def remove(self, name: str) -> None:
        self.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
