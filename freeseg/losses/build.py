"""Build the matcher and criterion from config, and FreeSeg's loss-weight dict.

Config keys read (all under ``MODEL.MASK_FORMER`` unless noted):
``LOSS_TYPE`` ("focal_full" | "point_bce"), ``FIXED_LOSS_WEIGHTS``, ``CLASS_WEIGHT``,
``MASK_WEIGHT``, ``DICE_WEIGHT``, ``NO_OBJECT_WEIGHT``, ``DEEP_SUPERVISION``, ``DEC_LAYERS``,
``TRAIN_NUM_POINTS``, ``OVERSAMPLE_RATIO``, ``IMPORTANCE_SAMPLE_RATIO``, and
``MODEL.SEM_SEG_HEAD.NUM_CLASSES``.
"""
from __future__ import annotations

from freeseg.losses.criterion import MASK_LOSSES, SetCriterion
from freeseg.utils.errors import FreeSegError

# LOSS_TYPE -> the matcher's mask cost that goes with it (each flavour matches the way it
# is trained: FreeSeg at prediction resolution, Mask2Former on random points).
MATCHER_MASK_COST = {"focal_full": "focal", "point_bce": "point_bce"}


def build_weight_dict(
    *,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
    deep_supervision: bool,
    num_aux: int,
) -> dict[str, float]:
    """{loss_ce, loss_mask, loss_dice} weights plus copies suffixed _0 … _{num_aux−1}.

    Args:
        num_aux: how many auxiliary outputs to supervise (ignored without deep supervision).
    """
    weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    if deep_supervision:
        base = dict(weight_dict)
        for i in range(num_aux):
            weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
    return weight_dict


def build_criterion(cfg) -> SetCriterion:
    """FreeSeg's criterion (default) or its fixed / point-sampled variants, from ``cfg``.

    ``FIXED_LOSS_WEIGHTS = False`` reproduces the original exactly: the CE weight and the
    matcher's class cost are 1 whatever ``CLASS_WEIGHT`` says, and the weight dict covers aux
    outputs 0 … DEC_LAYERS−2 only. FreeSeg's decoder has DEC_LAYERS layers (it does not
    subtract 1 like Mask2Former), i.e. DEC_LAYERS aux outputs, so the last one is computed
    but never supervised (FREESEG_SPEC §8.4).
    ``FIXED_LOSS_WEIGHTS = True``: CE and class cost weighted by ``CLASS_WEIGHT`` (as in
    Mask2Former) and all DEC_LAYERS aux outputs supervised.
    """
    # Imported here: the matcher imports this package's cost functions, so a module-level
    # import would be circular whichever of the two is imported first.
    from freeseg.modeling.matcher import HungarianMatcher

    mf = cfg.MODEL.MASK_FORMER
    loss_type = mf.LOSS_TYPE
    if loss_type not in MASK_LOSSES:
        raise FreeSegError(
            f"MODEL.MASK_FORMER.LOSS_TYPE={loss_type!r} is not one of {MASK_LOSSES}; pick one of those"
        )
    fixed = bool(mf.FIXED_LOSS_WEIGHTS)
    class_weight = float(mf.CLASS_WEIGHT) if fixed else 1.0
    num_aux = mf.DEC_LAYERS if fixed else mf.DEC_LAYERS - 1
    matcher = HungarianMatcher(
        cost_class=class_weight,
        cost_mask=float(mf.MASK_WEIGHT),
        cost_dice=float(mf.DICE_WEIGHT),
        mask_cost=MATCHER_MASK_COST[loss_type],
        num_points=int(mf.TRAIN_NUM_POINTS),
    )
    weight_dict = build_weight_dict(
        class_weight=class_weight,
        mask_weight=float(mf.MASK_WEIGHT),
        dice_weight=float(mf.DICE_WEIGHT),
        deep_supervision=bool(mf.DEEP_SUPERVISION),
        num_aux=num_aux,
    )
    return SetCriterion(
        num_classes=int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=float(mf.NO_OBJECT_WEIGHT),
        mask_loss=loss_type,
        num_points=int(mf.TRAIN_NUM_POINTS),
        oversample_ratio=float(mf.OVERSAMPLE_RATIO),
        importance_sample_ratio=float(mf.IMPORTANCE_SAMPLE_RATIO),
    )
