"""``get_cfg()``: detectron2's defaults + DeepLab's + Mask2Former's + FreeSeg's + ours.

The key set equals that of a ``cfg.dump()`` of FreeSeg's own ``train_net.setup()`` (checked by
``tests/config/test_defaults.py`` against the golden fixture), plus the keys listed under
"Config keys we add" in docs/architecture.md. docs/config.md says which keys our code reads.
"""
from __future__ import annotations

from .config import CfgNode as CN
from .detectron2_defaults import add_detectron2_config


def add_deeplab_config(cfg: CN) -> None:
    """detectron2 ``projects/DeepLab`` keys (FreeSeg calls ``add_deeplab_config``)."""
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # "deeplab" = 3 convs in the stem (the R101c / R-103 backbones); "basic" = one 7x7 conv.
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]


def add_mask_former_config(cfg: CN) -> None:
    """Mask2Former's keys as FreeSeg declares them (``add_mask_former_config``)."""
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale-jitter mapper sizes (Mask2Former's coco_*_lsj mappers).
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    mf = cfg.MODEL.MASK_FORMER = CN()
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False
    mf.SIZE_DIVISIBILITY = 32
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Point sampling of the mask loss (used with MASK_FORMER.LOSS_TYPE "point_bce").
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = False  # Mask2Former: True; FreeSeg always computes sem_seg anyway
    mf.TEST.INSTANCE_ON = False
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.8
    mf.TEST.OVERLAP_THRESHOLD = 0.8
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256
    head.TRANSFORMER_ENC_LAYERS = 0
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    swin = cfg.MODEL.SWIN = CN()
    swin.PRETRAIN_IMG_SIZE = 224
    swin.PATCH_SIZE = 4
    swin.EMBED_DIM = 96
    swin.DEPTHS = [2, 2, 6, 2]
    swin.NUM_HEADS = [3, 6, 12, 24]
    swin.WINDOW_SIZE = 7
    swin.MLP_RATIO = 4.0
    swin.QKV_BIAS = True
    swin.QK_SCALE = None
    swin.DROP_RATE = 0.0
    swin.ATTN_DROP_RATE = 0.0
    swin.DROP_PATH_RATE = 0.3
    swin.APE = False
    swin.PATCH_NORM = True
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def add_freeseg_config(cfg: CN) -> None:
    """The keys FreeSeg itself adds (FREESEG_SPEC.md section 7)."""
    cfg.ORACLE = False
    cfg.PSEUDO = False
    cfg.PSEUDO_WITH_PRIOR = True
    cfg.PSEUDO_REJECT_THRESHOLD = 0.0
    cfg.PSEUDO_FLAG_NAME = "trainable_flag"
    cfg.SOLVER.TEST_IMS_PER_BATCH = 1
    cfg.DATASETS.SAMPLE_PER_CLASS = -1
    cfg.DATASETS.SAMPLE_SEED = 0
    cfg.INPUT.TASK_NAME = ["semantic segmentation."]

    cfg.TEST.SLIDING_WINDOW = False
    cfg.TEST.SLIDING_TILE_SIZE = 224
    cfg.TEST.SLIDING_OVERLAP = 2 / 3.0
    cfg.TEST.DENSE_CRF = False
    cfg.TEST.OPTIM = CN()
    cfg.TEST.OPTIM.LR = 0.001
    # Inference under autocast: backbone, pixel decoder and mask decoder in DTYPE (about 1.5x
    # faster on CPUs with native bf16, more on GPUs); CLIP text and post-processing stay fp32,
    # the region crops follow MODEL.CLIP_ADAPTER.REGION_DTYPE. Changes results slightly.
    cfg.TEST.AMP = CN()
    cfg.TEST.AMP.ENABLED = False
    cfg.TEST.AMP.DTYPE = "bfloat16"  # or "float16"

    head = cfg.MODEL.SEM_SEG_HEAD
    head.EMBEDDING_DIM = 512
    head.EMBED_HIDDEN_DIM = 1024
    head.EMBED_LAYERS = 2
    head.EMB_SIZE = 256
    head.EMBED_DIM = 2048
    head.NUM_HEADS = 8
    head.USE_LAYER_SCALE = True

    clip = cfg.MODEL.CLIP_ADAPTER = CN()
    clip.PROMPT_LEARNER = "learnable"
    clip.PREDEFINED_PROMPT_TEMPLATES = ["a sculpture of a {}."]
    clip.PROMPT_DIM = 512
    clip.PROMPT_SHAPE = (16, 0)
    clip.TASK_PROMPT_SHAPE = 8
    clip.PROMPT_CHECKPOINT = ""
    clip.CLIP_MODEL_NAME = "ViT-B/16"
    clip.MASK_FILL = "mean"
    clip.MASK_EXPAND_RATIO = 1.0
    clip.MASK_THR = 0.5
    clip.MASK_MATTING = False
    clip.REGION_RESIZED = True
    clip.CLIP_ENSEMBLE = True
    clip.CLIP_ENSEMBLE_WEIGHT = 0.8
    clip.SEPERATE_ADAPTER = False  # sic: FreeSeg's spelling, kept for its config files
    region = clip.REGION_CLIP_ADAPTER = CN()
    region.CLIP_MODEL_NAME = "ViT-B/16"
    region.PROMPT_LEARNER = "predefined"
    region.PREDEFINED_PROMPT_TEMPLATES = ["a photo of a {}."]
    region.PROMPT_DIM = 512
    region.PROMPT_SHAPE = (16, 0)
    region.PROMPT_CHECKPOINT = ""

    cfg.WANDB = CN()
    cfg.WANDB.PROJECT = "zero_shot_seg"
    cfg.WANDB.NAME = None


def add_freeseg_extra_config(cfg: CN) -> None:
    """Keys this project adds (docs/architecture.md, "Config keys we add")."""
    clip = cfg.MODEL.CLIP_ADAPTER
    # Local CLIP weights (OpenAI .pt, state dict or open_clip checkpoint); "" falls back to
    # $FREESEG_CLIP_WEIGHTS, then weights/<CLIP_MODEL_NAME with "/" as "-">.pt; "random" builds a
    # random CLIP on purpose (training and evaluation otherwise refuse a CLIP nothing filled).
    clip.CLIP_WEIGHTS = ""
    clip.REGION_TOPK = 0  # >0: only the best k queries' regions go through CLIP (fast mode)
    # Crops per CLIP forward (memory and speed; results only by float rounding); 0 = by device: 8 on a CPU
    # (activations stay in cache: measured fastest), 32 on a GPU.
    clip.REGION_BATCH = 0
    # "float32" = exact; "bfloat16" / "float16": regions through a low-precision copy of CLIP's
    # image tower (about 2x faster where the hardware has it; changes results slightly).
    clip.REGION_DTYPE = "float32"
    cfg.MODEL.MASK_FORMER.LOSS_TYPE = "focal_full"  # FreeSeg's; "point_bce" = Mask2Former's
    # False = the original's weights (class weight 1 whatever CLASS_WEIGHT says, last aux output
    # unsupervised); True = CLASS_WEIGHT for loss and matcher, every aux output supervised.
    cfg.MODEL.MASK_FORMER.FIXED_LOSS_WEIGHTS = False
    cfg.MODEL.MASK_FORMER.TEST.ENTITY_ON = False
    # Mask2Former's key (FreeSeg's fork dropped it): instances kept per image before the
    # thing filter.
    cfg.MODEL.MASK_FORMER.TEST.TEST_TOPK_PER_IMAGE = 100
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_IMPL = "auto"  # auto, pytorch, cpu, cuda
    # YAML files describing your own semantic data sets (freeseg/data/custom.py), registered
    # before DATASETS.TRAIN / TEST are read.
    cfg.DATASETS.CUSTOM = ()
    # Sizes FreeSeg hard-codes, as keys (defaults = the original's values).
    cfg.MODEL.SEM_SEG_HEAD.INTERACTION_DROPOUT = 0.1  # on the interaction's attention weights
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_DIM_FEEDFORWARD = 1024  # pixel decoder encoder FFN
    # Any timm `features_only` model as backbone (MODEL.BACKBONE.NAME build_timm_backbone).
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.NAME = ""
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.0
    cfg.MODEL.TIMM.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.SOLVER.AMP.DTYPE = "float16"  # or "bfloat16" (no grad scaler)
    cfg.SOLVER.NONFINITE_LOSS = "stop"  # or "skip" the step
    cfg.SOLVER.COMPILE = False
    # Requested by the engine (freeseg/engine): deterministic kernels (slower), log every N
    # iterations, DDP's find_unused_parameters (needed when some parameters get no gradient).
    cfg.SOLVER.DETERMINISTIC = False
    cfg.SOLVER.LOG_PERIOD = 20
    cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False
    cfg.DATALOADER.SKIP_CORRUPT = True
    cfg.WANDB.ENABLED = False
    cfg.INPUT.LSJ_AUG = False  # True: real large-scale jitter in the full-task mapper


def get_cfg() -> CN:
    """A fresh, mutable config holding every default."""
    cfg = CN()
    add_detectron2_config(cfg)
    add_deeplab_config(cfg)
    add_mask_former_config(cfg)
    add_freeseg_config(cfg)
    add_freeseg_extra_config(cfg)
    return cfg
