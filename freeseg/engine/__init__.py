"""Training engine: trainer (loop + hooks), checkpoints, optimizer and LR schedules, launch.

See docs/training.md.
"""
from .checkpoint import Checkpointer, config_fingerprint, load_checkpoint
from .hooks import EvalHook, IterationTimer, PeriodicCheckpointer, PeriodicWriter, SignalHandler
from .launch import create_ddp_model, launch
from .lr_scheduler import WarmupSchedule, build_lr_scheduler
from .optimizer import GradientClipper, build_grad_clipper, build_optimizer, get_param_groups
from .train_loop import HookBase, NonFiniteLossError, Trainer

__all__ = [
    "Checkpointer", "EvalHook", "GradientClipper", "HookBase", "IterationTimer",
    "NonFiniteLossError", "PeriodicCheckpointer", "PeriodicWriter", "SignalHandler", "Trainer",
    "WarmupSchedule", "build_grad_clipper", "build_lr_scheduler", "build_optimizer",
    "config_fingerprint", "create_ddp_model", "get_param_groups", "launch", "load_checkpoint",
]
