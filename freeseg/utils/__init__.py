from .errors import ConfigError, FreeSegError

__all__ = ["ConfigError", "FreeSegError"]
