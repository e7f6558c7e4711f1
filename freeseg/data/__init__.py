"""Data: catalog, built-in data sets (registered on import), transforms, mappers and loaders.

``build_train_loader`` / ``build_test_loader`` / ``build_mapper`` are imported lazily so that
``import freeseg.data`` (e.g. by ``freeseg prepare``) does not pull in torch.
"""
from typing import Any

from .builtin import dataset_root as _dataset_root, register_all as _register_all
from .catalog import DatasetCatalog, Metadata, MetadataCatalog

_register_all(_dataset_root())

_LAZY = {"build_train_loader": "loaders", "build_test_loader": "loaders", "get_dataset_dicts": "loaders",
         "build_mapper": "mappers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'freeseg.data' has no attribute '{name}'")


__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog", *_LAZY]
