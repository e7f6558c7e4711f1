"""Data: catalog, built-in data sets (registered on import), transforms, mappers and loaders."""
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .builtin import dataset_root as _dataset_root, register_all as _register_all

_register_all(_dataset_root())

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]
