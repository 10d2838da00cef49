"""The ComfyUI glue: the only code that knows ModelPatcher, ``transformer_options``, sampler
wrappers and the hosts' patch call forms. The engine one level up never imports it."""

from .hooks import log_host_check
from .patcher import apply_token_merging, last_report, merging_patch, unsupported
from .families import FAMILIES, UNET_DEFAULTS
from .run import (DIT_BLOCKS, DIT_MERGE, LEVELS_AUTO, TARGETS, VIDEO_CELLS, VIDEO_SEARCH, MergingPatch, RunLog, RunReport, RunState,
                  TokenMerging)

__all__ = ["DIT_BLOCKS", "DIT_MERGE", "FAMILIES", "UNET_DEFAULTS", "LEVELS_AUTO", "TARGETS", "VIDEO_CELLS", "VIDEO_SEARCH", "MergingPatch", "RunLog", "RunReport",
           "RunState", "TokenMerging", "apply_token_merging", "last_report", "log_host_check", "merging_patch",
           "unsupported"]
