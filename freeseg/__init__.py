"""FreeSeg, rebuilt: unified, universal, open-vocabulary segmentation on current PyTorch.

Public API (kept stable; see README "Python API")::

    cfg = freeseg.get_cfg()
    cfg.merge_from_file("configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = freeseg.build_model(cfg)
    missing, unexpected = freeseg.load_checkpoint(model, "model_final.pth")
    model.set_vocabulary(["cat", "dog", "grass"])
    outputs = model([{"image": image_uint8_chw_rgb, "height": h, "width": w}])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["get_cfg", "build_model", "load_checkpoint", "__version__"]


def get_cfg() -> Any:
    """A fresh config with every default (detectron2 + Mask2Former + FreeSeg keys)."""
    from .config import get_cfg as _get_cfg

    return _get_cfg()


def build_model(cfg: Any) -> Any:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``."""
    from .modeling import build_model as _build_model

    return _build_model(cfg)


def load_checkpoint(model: Any, path: str) -> tuple[list[str], list[str]]:
    """Load our, FreeSeg/detectron2 or backbone checkpoints; returns (missing, unexpected) keys."""
    from .engine.checkpoint import load_checkpoint as _load

    return _load(model, path)


if TYPE_CHECKING:  # pragma: no cover
    from .config import CfgNode  # noqa: F401
