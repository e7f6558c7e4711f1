"""get_cfg() key set and defaults against FreeSeg's golden config dump."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from freeseg.config import CfgNode, get_cfg

# docs/architecture.md, "Config keys we add"
OUR_KEYS = {
    "MODEL.CLIP_ADAPTER.CLIP_WEIGHTS": "",
    "MODEL.CLIP_ADAPTER.REGION_TOPK": 0,
    "MODEL.CLIP_ADAPTER.REGION_BATCH": 0,
    "MODEL.CLIP_ADAPTER.REGION_DTYPE": "float32",
    "TEST.AMP.ENABLED": False,
    "TEST.AMP.DTYPE": "bfloat16",
    "MODEL.MASK_FORMER.LOSS_TYPE": "focal_full",
    "MODEL.MASK_FORMER.FIXED_LOSS_WEIGHTS": False,
    "MODEL.MASK_FORMER.TEST.ENTITY_ON": False,
    "MODEL.MASK_FORMER.TEST.TEST_TOPK_PER_IMAGE": 100,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL": "auto",
    "DATASETS.CUSTOM": (),
    "MODEL.SEM_SEG_HEAD.INTERACTION_DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_DIM_FEEDFORWARD": 1024,
    "MODEL.TIMM.NAME": "",
    "MODEL.TIMM.DROP_PATH_RATE": 0.0,
    "MODEL.TIMM.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "SOLVER.AMP.DTYPE": "float16",
    "SOLVER.NONFINITE_LOSS": "stop",
    "SOLVER.COMPILE": False,
    "SOLVER.DETERMINISTIC": False,
    "SOLVER.LOG_PERIOD": 20,
    "SOLVER.DDP_FIND_UNUSED_PARAMETERS": False,
    "SOLVER.WARMUP_METHOD": "linear",
    "DATALOADER.SKIP_CORRUPT": True,
    "WANDB.ENABLED": False,
    "INPUT.LSJ_AUG": False,
}


def leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def lookup(cfg: CfgNode, full_key: str):
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


def same_kind(ours, theirs) -> bool:
    if ours is None or theirs is None:
        return True  # None defaults accept any type, as in detectron2
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return True  # YAML has no tuples: the dump writes them as lists
    return type(ours) is type(theirs)


def test_every_fixture_key_exists_with_same_type(fixture_a: Path) -> None:
    dumped = leaves(yaml.safe_load((fixture_a / "config.yaml").read_text()))
    ours = leaves(get_cfg())
    missing = sorted(set(dumped) - set(ours))
    assert not missing, f"keys of the original's dump missing in get_cfg(): {missing}"
    wrong = [k for k, v in dumped.items() if not same_kind(ours[k], v)]
    assert not wrong, f"type differs from the original: {[(k, ours[k], dumped[k]) for k in wrong]}"
    extra = set(ours) - set(dumped)
    assert extra == set(OUR_KEYS) - set(dumped), "only the documented keys may be added"


def test_documented_added_keys_and_detectron2_basics() -> None:
    cfg = get_cfg()
    for key, default in OUR_KEYS.items():
        assert lookup(cfg, key) == default, key
    assert cfg.VERSION == 2 and cfg.SEED == -1 and cfg.OUTPUT_DIR == "./output"
    assert cfg.MODEL.DEVICE == "cuda" and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,) and cfg.SOLVER.STEPS == (30000,)
    assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(0.001)
    # FreeSeg's own defaults (FREESEG_SPEC.md section 7)
    clip = cfg.MODEL.CLIP_ADAPTER
    assert clip.PROMPT_SHAPE == (16, 0) and clip.TASK_PROMPT_SHAPE == 8
    assert clip.CLIP_ENSEMBLE_WEIGHT == 0.8 and clip.PREDEFINED_PROMPT_TEMPLATES == ["a sculpture of a {}."]
    assert cfg.MODEL.SEM_SEG_HEAD.EMBED_HIDDEN_DIM == 1024 and cfg.MODEL.SEM_SEG_HEAD.EMB_SIZE == 256
    assert cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON is False
    assert cfg.TEST.SLIDING_OVERLAP == pytest.approx(2 / 3)
    assert cfg.WANDB.NAME is None and cfg.WANDB.PROJECT == "zero_shot_seg"


def test_get_cfg_returns_independent_copies() -> None:
    a, b = get_cfg(), get_cfg()
    a.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
    a.MODEL.PIXEL_MEAN.append(1.0)
    assert b.MODEL.MASK_FORMER.TEST.INSTANCE_ON is False
    assert b.MODEL.PIXEL_MEAN == [103.530, 116.280, 123.675]


def test_fixture_config_loads_as_is_and_matches(fixture_a: Path) -> None:
    for name in ("config.yaml", "stage1_config.yaml"):
        dumped = leaves(yaml.safe_load((fixture_a / name).read_text()))
        cfg = get_cfg()
        cfg.merge_from_file(fixture_a / name)
        for key, value in dumped.items():
            ours = lookup(cfg, key)
            plain = yaml.safe_load(yaml.safe_dump(ours))  # tuples -> lists, as in the dump
            assert plain == value, f"{name}: {key} = {ours!r}, dump has {value!r}"
    assert cfg.MODEL.META_ARCHITECTURE == "ProposalClipClassifier"
