"""The DiT families CA-ToMe merges: one declarative entry each.

An entry says what the block patch (``dit.block_patch``) needs to know about a family, and nothing
is special-cased elsewhere:
- which of the model's block lists to replace, and how: under which ``patches_replace["dit"]``
  kind, or — for families whose blocks offer no such hook (Z-Image, Krea 2) — by an object patch of
  each block's ``forward`` (``ModelPatcher.add_object_patch``: the module tree, its state-dict keys
  and LoRA keys stay as they are, and the host's own per-layer patches still see every token);
- where the image (or video) grid sits in a block's ``img``: first, after the text (Flux's
  single blocks see [txt, img]) or last (MiniMax-H3), and in which stream when ``img`` is a
  tuple (LTX-2's (video, audio)); everything else (reference images, context latents, audio)
  passes whole, as does the text stream;
- which block inputs are per-token, along which dimension, and over which sequence — the
  joint [txt, img] one (or [img, txt]) or ``img`` itself —, so the kept tokens keep their own rows
  (RoPE tables, attention masks, per-frame or per-token timestep modulation, modulation ranges);
- the token grid: (height, width) for images, (frames, height, width) for video, from the latent
  and the patch size; and what follows the grid in a block's sequence (Z-Image's pad tokens);
- when a model call or a block call must run unmerged, with the reason that is logged.
A new family is an entry here plus its tests. (Anchors: diffusers' TransformerBlockRegistry, and
context-parallel plans, which ask the same question: which inputs are per-token, along which dim.)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from .run import DIT_MERGE

DOUBLE, SINGLE = "double_block", "single_block"
DIT_HOOK, FORWARD_HOOK = "dit", "forward"  # patches_replace["dit"], or an object patch of each block's forward
JOINT, IMAGE = "joint", "image"  # the sequence a per-token input spans: [txt, img] or img alone
TIMESTEP_ZERO_REFERENCES = "index_timestep_zero"


@dataclass(frozen=True)
class PerToken:
    """A block input with one row per token along ``dim``; ``mask``: an attention mask whose last
    one or two dims span the sequence (both follow the kept tokens); ``timesteps``: per-token
    timestep modulation with one row, or rows spread evenly over ``img`` (Wan 2.2 5B: one per
    frame) — the kept tokens keep their rows, and tokens of different timesteps never merge."""

    name: str
    dim: int = 1
    sequence: str = JOINT
    mask: bool = False
    timesteps: bool = False
    segments: bool = False  # [(start, stop, modulation row), …] over img (MiniMax): the grid's range shrinks
    item: int | None = None  # the input is a tuple whose element ``item`` is per token (LTX's RoPE: (rotation, split))


@dataclass(frozen=True)
class BlockKind:
    kind: str  # the key of patches_replace["dit"] (also what dit_blocks selects: one-kind models' are DOUBLE)
    blocks: str  # the diffusion model's list of these blocks
    hook: str = DIT_HOOK
    grid_after_text: bool = False  # img = [txt, grid, …] rather than [grid, …]
    stream: int | None = None  # img is a tuple of streams (LTX-2: video, audio); the grid is in this one
    grid_last: bool = False  # the grid is the end of img (MiniMax: [text, conditions, audio, video])
    unbatched: bool = False  # img is [tokens, channels] of a batch of one
    per_token: tuple[PerToken, ...] = ()
    unmerged_when: Callable[[dict], str | None] | None = None  # args -> why this call runs whole


@dataclass(frozen=True)
class Defaults:
    """What the node's preset 'model default' sets for a family, and where the values come from."""

    threshold: float
    schedule: str
    full_every: int  # 0: every step merges
    source: str
    dit_merge: str = next(iter(DIT_MERGE))  # what runs on merged tokens (run.DIT_MERGE)

    def settings(self) -> str:
        full = f", a full step every {self.full_every}" if self.full_every else ""
        merge = "" if self.dit_merge == Defaults.dit_merge else f", {self.dit_merge} merged"
        return f"threshold {self.threshold:g}, schedule {self.schedule}{full}{merge}"

    def describe(self) -> str:
        return f"{self.settings()}; {self.source}"


UNET_DEFAULTS = Defaults(0.7, "CONFIG_3", 0, "the paper's, for SD1.x/SDXL UNets")
# DiTs (benchmarks/results/dit_fidelity*.json): settings that reached the fidelity goal (SSIM ≥ 0.95;
# video: per-frame PSNR ≥ 30 dB) at 8 and 20 steps on the proxies trained here. Every merged step
# recomputes its pairs (4–8-step runs would anyway). Images and coarse video tokens: every other step
# runs whole and refreshes each token's own update (the goal on every proxy). Wan's video (16 pixels a
# token: 1,560 tokens a frame at 480p): only the attention merges, as measured on the proxy at that
# density, at t = 0.3: the most picture that met the Wan-width speed goal (0.25 kept the fidelity goal
# too and ran faster, for less picture); the 384-token-a-frame proxy lost more with it (below the
# goal), so video whose tokens are that coarse (LTX-2, MiniMax-H3: 32 pixels a token) keeps full
# steps. Families without a proxy of their own borrow the nearest one's.
FLUX_DEFAULTS = Defaults(0.3, "all", 2, "measured on the trained Flux proxies, 256 and 1,024 image tokens")
WAN_DEFAULTS = Defaults(0.3, "all", 0, "measured on the trained Wan proxy at 1,536 tokens a frame",
                        dit_merge="attention only")
COARSE_VIDEO_DEFAULTS = Defaults(0.3, "all", 2, "borrowed from Wan's proxies at 384 and 1,536 tokens a frame "
                                 "(coarse tokens: no proxy of its own)")
IMAGE_DIT_DEFAULTS = dataclasses.replace(FLUX_DEFAULTS, source="borrowed from Flux's (no proxy of its own)")
VIDEO_DIT_DEFAULTS = dataclasses.replace(WAN_DEFAULTS, source="borrowed from Wan's (no proxy of its own)")


@dataclass(frozen=True)
class Family:
    name: str  # as messages and the README name it
    model_class: str  # "module:Class" of the diffusion model
    kinds: tuple[BlockKind, ...]
    defaults: Defaults
    exact_class: bool = True  # subclasses (other layouts) are other families
    video: bool = False  # latent [B, C, frames, H, W]
    patch: tuple[int, ...] | None = None  # latent pixels per token, where the model keeps only its spatial one
    text_first: Callable[[object], bool] | None = None  # diffusion model -> the joint sequence is [txt, img] (default)
    packed: bool = False  # hosts pack the latents into one [B, 1, N] tensor and pass their shapes (LTX-2)
    unmerged_when: Callable[[object, object, dict], str | None] | None = None  # (diffusion model, x, call kwargs) -> why
    after_grid: Callable[[object, int], int] | None = None  # (diffusion model, grid tokens) -> tokens after it (pads)

    def matches(self, diffusion_model) -> bool:
        module, name = self.model_class.split(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # an older host without this family
            return False
        return type(diffusion_model) is cls if self.exact_class else isinstance(diffusion_model, cls)

    def block_counts(self, diffusion_model) -> dict[str, int]:
        return {kind.kind: len(getattr(diffusion_model, kind.blocks)) for kind in self.kinds}

    def kind(self, name: str) -> BlockKind:
        return next(kind for kind in self.kinds if kind.kind == name)

    def latent_shape(self, x, kwargs: dict) -> tuple[int, ...]:
        """The main latent's shape: ``x``'s, or the first of the packed ones' (video before audio)."""
        shapes = kwargs.get("latent_shapes") if self.packed else None
        return tuple(shapes[0]) if shapes else tuple(x.shape)

    def grid(self, diffusion_model, latent_shape) -> tuple[int, ...]:
        """The main latent's token grid: (height, width), or (frames, height, width) for video."""
        patch = self.patch or _patch_size(diffusion_model, 3 if self.video else 2)
        spatial = latent_shape[-len(patch):]
        return tuple(math.ceil(size / step) for size, step in zip(spatial, patch))


def _pad_to_multiple(diffusion_model, tokens: int) -> int:
    """Z-Image pads the image tokens to a multiple of ``pad_tokens_multiple`` (32); Lumina 2 does not."""
    multiple = getattr(diffusion_model, "pad_tokens_multiple", None)
    return -tokens % multiple if multiple else 0


def _z_image_references(_diffusion_model, _x, kwargs: dict) -> str | None:
    if kwargs.get("ref_latents"):
        return ("this Z-Image model got reference images (omni); they and their SigLIP tokens are modulated at "
                "timestep zero by token ranges fixed for the unmerged sequence, so these calls run unmerged")
    return None


def _timestep_zero_ranges(args: dict) -> str | None:
    if args.get("timestep_zero_index") is not None:
        return "this block modulates reference tokens at timestep zero by ranges fixed for the unmerged sequence"
    return None


def _krea_frames_or_references(diffusion_model, x, kwargs: dict) -> str | None:
    if x.shape[2] > 1:
        return "this Krea 2 model got several latent frames, which it samples as separate images; these calls run unmerged"
    return _references_by_position(diffusion_model, x, kwargs)


def _patch_size(diffusion_model, dims: int) -> tuple[int, ...]:
    embedder = getattr(diffusion_model, "x_embedder", None)
    size = getattr(embedder, "patch_size", None) or diffusion_model.patch_size
    return (size,) * dims if isinstance(size, int) else tuple(size[-dims:])


def _references_by_position(diffusion_model, _x, kwargs: dict) -> str | None:
    """Flux and Qwen-Image read the method from the conditioning, else from the model's default
    (Qwen-Image-Edit 2511's, or what the core Flux KV Cache node object-patches); in that mode the
    blocks get reference-token modulation ranges from a closure, fixed for the unmerged sequence."""
    if not kwargs.get("ref_latents"):
        return None
    params = getattr(diffusion_model, "params", diffusion_model)
    if kwargs.get("ref_latents_method", getattr(params, "default_ref_method", None)) != TIMESTEP_ZERO_REFERENCES:
        return None
    return (f"this model modulates its reference-image tokens by position ('{TIMESTEP_ZERO_REFERENCES}': Qwen-Image-Edit "
            "2511, or set by the Flux KV Cache node); the ranges are fixed for the unmerged sequence, so these calls run "
            "unmerged")


def _qwen_layers(diffusion_model, x, kwargs: dict) -> str | None:
    if x.shape[2] > 1:
        return ("this Qwen-Image model's latent holds several image layers (Qwen-Image-Layered); they are not frames "
                "of one picture, so these calls run unmerged")
    return _references_by_position(diffusion_model, x, kwargs)


def _wan_reference_before_the_video(diffusion_model, _x, kwargs: dict) -> str | None:
    if getattr(diffusion_model, "ref_conv", None) is not None and kwargs.get("reference_latent") is not None:
        return "this Wan model puts reference tokens before the video tokens; these calls run unmerged"
    return None


def _hunyuan_text_first(diffusion_model) -> bool:
    """Older hosts build HunyuanVideo's blocks with the joint sequence flipped to [img, txt]."""
    return not getattr(diffusion_model.double_blocks[0], "flipped_img_txt", False)


def _hunyuan_references(_diffusion_model, _x, kwargs: dict) -> str | None:
    if kwargs.get("ref_latent") is not None:
        return "this HunyuanVideo model puts reference tokens before the video tokens; these calls run unmerged"
    return None


def _hunyuan_guiding_frame(args: dict) -> str | None:
    if args.get("modulation_dims_img") is not None or args.get("modulation_dims") is not None:
        return ("this HunyuanVideo model modulates its guiding frame (image-to-video 'v2 replace') by token ranges "
                "fixed for the unmerged sequence, so these blocks run unmerged")
    return None


def _ltx_guides(_diffusion_model, _x, kwargs: dict) -> str | None:
    if kwargs.get("keyframe_idxs") is not None:
        return ("this LTX-2 run appends guide frames (LTXVAddGuide) to the video, attended through a mask fixed for "
                "the unmerged sequence; these calls run unmerged")
    return None


def _ltx_guide_mask(args: dict) -> str | None:
    if args.get("self_attention_mask") is not None:
        return "this LTX-2 block masks its self-attention by position; these blocks run unmerged"
    return None


FLUX_PER_TOKEN = (PerToken("pe", dim=2), PerToken("attn_mask", mask=True))
HUNYUAN_PER_TOKEN = (PerToken("pe", dim=2), PerToken("attention_mask", mask=True))

FAMILIES = (
    # Flux.1 dev/schnell, Kontext and Flux 2 (one class): double blocks see img = [grid, references…],
    # single blocks [txt, grid, references…]; RoPE rows (``pe``, dim 2) and masks span [txt, img].
    Family("Flux.1 and Flux 2", "comfy.ldm.flux.model:Flux", (
        BlockKind(DOUBLE, "double_blocks", per_token=FLUX_PER_TOKEN),
        BlockKind(SINGLE, "single_blocks", grid_after_text=True, per_token=FLUX_PER_TOKEN),
    ), FLUX_DEFAULTS, unmerged_when=_references_by_position),
    # Chroma (Flux layout without the vector input; ``vec`` holds each block's own modulation,
    # not per token). Chroma Radiance (a pixel-space subclass with its own patch head) is another family.
    Family("Chroma", "comfy.ldm.chroma.model:Chroma", (
        BlockKind(DOUBLE, "double_blocks", per_token=FLUX_PER_TOKEN),
        BlockKind(SINGLE, "single_blocks", grid_after_text=True, per_token=FLUX_PER_TOKEN),
    ), IMAGE_DIT_DEFAULTS),
    # Qwen-Image 1.x and Edit: img = [grid, reference images…] over a 5-D latent of one frame,
    # 2×2 patches; RoPE rows (``pe``, dim 2) span [txt, img]; the text mask is rebuilt per length.
    Family("Qwen-Image/Edit", "comfy.ldm.qwen_image.model:QwenImageTransformer2DModel", (
        BlockKind(DOUBLE, "transformer_blocks", per_token=(PerToken("pe", dim=2),)),
    ), IMAGE_DIT_DEFAULTS, video=True, patch=(1, 2, 2), unmerged_when=_qwen_layers),
    # HunyuanVideo 1.0, I2V and 1.5 (one class; Flux's blocks, (1, 2, 2) or 1×1×1 patches): double
    # blocks see img = [grid], single blocks the joint sequence; RoPE rows and the text mask span it,
    # [txt, img] — or [img, txt] on older hosts. 1.5's text stream also holds vision and glyph tokens.
    Family("HunyuanVideo", "comfy.ldm.hunyuan_video.model:HunyuanVideo", (
        BlockKind(DOUBLE, "double_blocks", per_token=HUNYUAN_PER_TOKEN, unmerged_when=_hunyuan_guiding_frame),
        BlockKind(SINGLE, "single_blocks", grid_after_text=True, per_token=HUNYUAN_PER_TOKEN,
                  unmerged_when=_hunyuan_guiding_frame),
    ), VIDEO_DIT_DEFAULTS, video=True, text_first=_hunyuan_text_first, unmerged_when=_hunyuan_references),
    # LTX-2 (audio + video; the video-only LTXV is another family): img = (video, audio); the video
    # grid is one token per latent pixel, and its RoPE rows (self- and audio-cross-attention) and
    # its timestep rows (per frame or per token when frames are kept clean) follow the kept tokens;
    # the audio stream passes whole, though it attends to the merged video.
    Family("LTX-2", "comfy.ldm.lightricks.av_model:LTXAVModel", (
        BlockKind(DOUBLE, "transformer_blocks", stream=0, unmerged_when=_ltx_guide_mask, per_token=(
            PerToken("v_pe", dim=1, sequence=IMAGE, item=0), PerToken("v_cross_pe", dim=1, sequence=IMAGE, item=0),
            *(PerToken(name, dim=1, sequence=IMAGE, timesteps=True) for name in (
                "v_timestep", "v_cross_scale_shift_timestep", "v_cross_gate_timestep")))),
    ), COARSE_VIDEO_DEFAULTS, video=True, packed=True, patch=(1, 1, 1), unmerged_when=_ltx_guides),
    # MiniMax-H3 (video + audio, batch 1): img = [text, keyframes, references, audio, video] in one
    # unbatched sequence; the video grid is its end. RoPE rows span img; ``mod_segments`` gives each
    # range of img its modulation row (a row per token where a mask keeps tokens clean).
    Family("MiniMax-H3", "comfy.ldm.minimax.model:MiniMaxH3Model", (
        BlockKind(DOUBLE, "blocks", grid_last=True, unbatched=True, per_token=(
            PerToken("rope_freqs", dim=1, sequence=IMAGE), PerToken("mod_segments", sequence=IMAGE, segments=True))),
    ), COARSE_VIDEO_DEFAULTS, video=True, packed=True),
    # SD3 / SD3.5: joint blocks offered as "double_block"; positions were added at the input (no pe).
    Family("SD3/SD3.5", "comfy.ldm.modules.diffusionmodules.mmdit:MMDiT", (
        BlockKind(DOUBLE, "joint_blocks"),
    ), IMAGE_DIT_DEFAULTS, exact_class=False),
    # Wan 2.1 / 2.2 (t2v, i2v: CLIP image tokens sit in the text stream): img = [video grid, context
    # latents…], (1, 2, 2) patches; RoPE rows (``pe`` [B, L, 1, …]) span img; ``vec`` [B, 1 or
    # frames, 6, dim] is the timestep modulation, per frame in Wan 2.2 5B (its i2v first frame is clean).
    Family("Wan 2.1/2.2", "comfy.ldm.wan.model:WanModel", (
        BlockKind(DOUBLE, "blocks", per_token=(PerToken("pe", dim=1, sequence=IMAGE),
                                               PerToken("vec", dim=1, sequence=IMAGE, timesteps=True))),
    ), WAN_DEFAULTS, video=True, unmerged_when=_wan_reference_before_the_video),
    # Z-Image (Turbo, Base) and Lumina 2 (NextDiT; no dit hook: each main layer's forward is
    # object-patched): layer(x, x_mask, freqs_cis, adaln_input, …) over [caption padded to 32 |
    # image padded to 32]; RoPE rows (``freqs_cis`` [B, L, 1, …]) span x; the modulation is per
    # sample. The refiners (image-only, text-only) before the main layers run whole, and so do
    # the host's ``double_block`` patches after each layer (Z-Image's ControlNet): they see every token.
    Family("Z-Image/Lumina 2", "comfy.ldm.lumina.model:NextDiT", (
        BlockKind(DOUBLE, "layers", hook=FORWARD_HOOK, grid_last=True, unmerged_when=_timestep_zero_ranges,
                  per_token=(PerToken("freqs_cis", dim=1, sequence=IMAGE),
                             PerToken("x_mask", mask=True, sequence=IMAGE))),
    ), IMAGE_DIT_DEFAULTS, unmerged_when=_z_image_references, after_grid=_pad_to_multiple),
    # Krea 2 (single-stream; no dit hook: each block's forward is object-patched): block(x, vec,
    # freqs, mask, …) over [txt, img, references]; Flux's RoPE rows (``freqs``, dim 2) span it.
    # Latents are 5-D (Wan 2.1's format) of one frame.
    Family("Krea 2", "comfy.ldm.krea2.model:SingleStreamDiT", (
        BlockKind(DOUBLE, "blocks", hook=FORWARD_HOOK, grid_after_text=True, unmerged_when=_timestep_zero_ranges,
                  per_token=(PerToken("freqs", dim=2), PerToken("mask", mask=True))),
    ), IMAGE_DIT_DEFAULTS, video=True, patch=(1, 2, 2), unmerged_when=_krea_frames_or_references),
)


def family_of(diffusion_model) -> Family | None:
    return next((family for family in FAMILIES if family.matches(diffusion_model)), None)
