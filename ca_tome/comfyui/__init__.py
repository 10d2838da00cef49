"""The ComfyUI glue: the only code that knows ModelPatcher, ``transformer_options``, sampler
wrappers and the hosts' patch call forms. The engine one level up never imports it."""

from .patcher import apply_token_merging, last_report, merging_patch
from .run import LEVELS_AUTO, TARGETS, MergingPatch, RunLog, RunReport, RunState, TokenMerging

__all__ = ["LEVELS_AUTO", "TARGETS", "MergingPatch", "RunLog", "RunReport", "RunState", "TokenMerging",
           "apply_token_merging", "last_report", "merging_patch"]
