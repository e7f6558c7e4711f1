"""CfgNode behaviour: attribute access, merging from lists, type checks, freeze, copies."""
from __future__ import annotations

import pickle

import pytest

from freeseg.config import CfgNode, get_cfg
from freeseg.utils.errors import ConfigError, FreeSegError


def test_attribute_and_item_access_are_the_same() -> None:
    cfg = get_cfg()
    assert cfg.MODEL.DEVICE is cfg["MODEL"]["DEVICE"]
    cfg.MODEL.DEVICE = "cpu"
    assert cfg["MODEL"]["DEVICE"] == "cpu"
    cfg.NEW = {"A": 1}  # declaring keys is allowed while not frozen
    assert isinstance(cfg.NEW, CfgNode) and cfg.NEW.A == 1
    with pytest.raises(AttributeError, match="did you mean 'DEVICE'"):
        _ = cfg.MODEL.DEVICES
    assert not hasattr(cfg, "NOPE")


def test_merge_from_list_parses_literals_and_checks_types() -> None:
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "SOLVER.BASE_LR", "0.5",
        "SOLVER.MAX_ITER", "30",
        "INPUT.CROP.SIZE", "(128, 128)",
        "DATASETS.TRAIN", "('a', 'b')",
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True",
        "INPUT.MIN_SIZE_TRAIN", "[96, 128]",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1",  # int where a float is expected
        "WANDB.NAME", "run-7",  # None default: a non-literal stays a string
        "MODEL.WEIGHTS", "123",  # string default: never literal_eval'd
    ])
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 30
    assert cfg.INPUT.CROP.SIZE == [128, 128]  # list default keeps list type
    assert cfg.DATASETS.TRAIN == ("a", "b")
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON is True
    assert cfg.INPUT.MIN_SIZE_TRAIN == (96, 128)  # tuple default: list converted
    clip_value = cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE
    assert clip_value == 1.0 and type(clip_value) is float
    assert cfg.WANDB.NAME == "run-7" and cfg.MODEL.WEIGHTS == "123"


@pytest.mark.parametrize(
    "opts, pattern",
    [
        (["MODEL.MASK_FORMER.DEC_LAYER", "3"], r"unknown config key MODEL\.MASK_FORMER\.DEC_LAYER .*did you mean MODEL\.MASK_FORMER\.DEC_LAYERS\?"),
        (["MODLE.DEVICE", "cpu"], r"unknown config key MODLE .*did you mean MODEL\?"),
        (["SOLVER.BASE_LR", "fast"], r"SOLVER\.BASE_LR: expected float .* got str 'fast'"),
        (["SOLVER.MAX_ITER", "1.5"], r"SOLVER\.MAX_ITER: expected int .* got float"),
        (["SOLVER.MAX_ITER", "True"], r"SOLVER\.MAX_ITER: expected int .* got bool"),
        (["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "1"], r"expected bool"),
        (["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "true"], r"expected bool .*\(write True or False\)"),
        (["INPUT.MIN_SIZE_TRAIN", "640"], r"expected tuple .*got int 640.*e\.g\. \"\(640,\)\""),
        (["DATASETS.TRAIN", "coco"], r"DATASETS\.TRAIN: expected tuple.*\('coco',\)"),
        (["MODEL.DEVICE", "cpu", "SEED"], r"KEY VALUE pairs"),
        (["MODEL", "x"], r"MODEL is a group of keys"),
        (["SEED.X", "1"], r"config key SEED is a value, not a group, so SEED\.X does not exist"),
        # an option after the overrides: argparse handed it over as a key or a value
        (["MODEL.WEIGHTS", "w.pth", "OUTPUT_DIR", "x", "--eval-only"], r"option --eval-only comes after the KEY VALUE"),
        (["MODEL.WEIGHTS", "w.pth", "--input", "a.png"], r"option --input comes after the KEY VALUE"),
        (["SOLVER.MAX_ITER", "None"], r"SOLVER\.MAX_ITER is empty \(null / None\).* needs a value of type int, like 40000"),
        (["INPUT.CROP.SIZE", "(512, 512"], r"INPUT\.CROP\.SIZE: '\(512, 512' does not parse .*of type list, like"),
        (["MODEL.PIXEL_MEAN", "[1, 2]"], r"MODEL\.PIXEL_MEAN needs 3 values \(one per RGB channel\), got \[1, 2\]"),
    ],
)
def test_merge_from_list_errors_are_one_line(opts: list[str], pattern: str) -> None:
    cfg = get_cfg()
    with pytest.raises(ConfigError, match=pattern) as info:
        cfg.merge_from_list(opts)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FreeSegError)


def test_freeze_defrost_and_clone() -> None:
    cfg = get_cfg().freeze()
    assert cfg.is_frozen() and cfg.MODEL.CLIP_ADAPTER.is_frozen()
    with pytest.raises(ConfigError, match="frozen"):
        cfg.MODEL.CLIP_ADAPTER.MASK_THR = 0.3
    with pytest.raises(ConfigError, match="frozen"):
        cfg.merge_from_list(["SEED", "1"])
    copy = cfg.clone()
    assert copy == cfg and copy.is_frozen()
    copy.defrost()
    copy.SEED = 3
    copy.MODEL.PIXEL_STD[0] = 2.0
    assert cfg.SEED == -1 and cfg.MODEL.PIXEL_STD[0] == 1.0 and not copy.MODEL.is_frozen()


def test_pickle_keeps_values_and_frozen_state() -> None:
    cfg = get_cfg()
    cfg.merge_from_list(["SEED", "5"])
    cfg.freeze()
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and type(back.MODEL) is CfgNode
    assert back.is_frozen() and back.SOLVER.AMP.is_frozen()
    assert back.INPUT.MIN_SIZE_TRAIN == (800,)
