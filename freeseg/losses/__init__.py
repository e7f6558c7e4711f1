"""Set criterion (Hungarian matching + class / mask / dice losses) and its builder."""
from freeseg.losses.build import build_criterion, build_weight_dict
from freeseg.losses.criterion import SetCriterion, apply_loss_weights
from freeseg.losses.targets import prepare_targets

__all__ = ["SetCriterion", "apply_loss_weights", "build_criterion", "build_weight_dict", "prepare_targets"]
