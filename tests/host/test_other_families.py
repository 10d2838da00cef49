"""The transformer families on real ComfyUI sampling (tiny in-memory DiTs in ComfyUI's own classes).

Every family of the README's table runs whole blocks on merged image (or video) tokens; the text
stream, the RoPE and timestep rows of the kept tokens, the residual stream and the pair cache
between checkpoints are checked here, and so are the calls that run unmerged and the models the
node refuses. Sizes are image-token grids (Flux 2, LTX-2 and HunyuanVideo 1.5 patchify 1×1, the
others 2×2). Real DiTs' massive activations are injected where the similarity must not be fooled
by them. (DiTs never get the UNet's attn1 patch pair, so newer hosts' other attn1 call forms
inside Flux's and Wan's blocks never reach it.)
"""

import pytest
import torch

from devkit.dit_models import (BLOCK_TEXT_TOKENS, FAMILIES, GRID, PATCH, dit_conditioning, dit_latent,
                               missing_classes, sample_dit, tiny_dit)
from devkit.sampling import Sampling, load_pack

STEPS = 3
MERGED_FAMILIES = ("flux", "flux2", "chroma", "qwen_image", "sd3", "wan21", "hunyuan_video", "ltx2", "minimax", "zimage",
                   "krea2")
FLUX_BLOCKS = {("double_block", 0), ("double_block", 1), ("single_block", 0), ("single_block", 1)}
TWO_DOUBLE = {("double_block", 0), ("double_block", 1)}
ONE_EACH = {("double_block", 0), ("single_block", 0)}
BLOCKS = {"flux": FLUX_BLOCKS, "flux2": FLUX_BLOCKS, "chroma": FLUX_BLOCKS, "qwen_image": TWO_DOUBLE, "hunyuan_video": ONE_EACH, "ltx2": TWO_DOUBLE, "minimax": TWO_DOUBLE, "sd3": TWO_DOUBLE, "wan21": TWO_DOUBLE, "zimage": TWO_DOUBLE, "krea2": TWO_DOUBLE}
FRAMES = {"wan21": 3, "hunyuan_video": 3, "ltx2": 3, "minimax": 3, "qwen_image": 1, "krea2": 1}  # latent frames of the 5-D families' runs (Wan's odd on purpose)


def token_grid(family, grid=GRID):
    """The grid CA-ToMe files a family's plans under: (height, width), or (frames, height, width)."""
    return (FRAMES[family], *grid) if family in FRAMES else tuple(grid)


def available(family):
    missing = missing_classes(family)
    if missing:
        pytest.skip(f"this ComfyUI host has no {', '.join(missing)}")
    return family


@pytest.fixture(scope="module", params=MERGED_FAMILIES)
def family(request):
    return available(request.param)


@pytest.fixture(scope="module")
def dit_model(family):
    return tiny_dit(family)


def patch(pack, model, threshold=0.0, schedule="all", dit_blocks="all", custom_steps="", **inputs):
    return pack.nodes.CATome.execute(model, threshold, schedule, custom_steps, "auto", 2, "qkv", "min",
                                     dit_blocks=dit_blocks, **inputs).result[0]


def report(patched):
    return load_pack().ca_tome.comfyui.last_report(patched)


def run(family, model, grid=GRID, **sampling):
    return sample_dit(model, family, Sampling(**{"steps": STEPS, **sampling}), grid=grid, frames=FRAMES.get(family, 1))


def parts(latent):
    """A latent's tensors: LTX-2's and MiniMax-H3's video and audio are nested in one."""
    return list(latent.unbind()) if getattr(latent, "is_nested", False) else [latent]


def same(a, b):
    return len(parts(a)) == len(parts(b)) and all(torch.equal(x, y) for x, y in zip(parts(a), parts(b)))


def flat(latent):
    return torch.cat([p.flatten() for p in parts(latent)])


def nested_like(tensors):
    import comfy.nested_tensor

    return comfy.nested_tensor.NestedTensor(tensors) if len(tensors) > 1 else tensors[0]


def random_latent(family, frames, seed):
    generator = torch.Generator().manual_seed(seed)
    return nested_like([torch.randn(p.shape, generator=generator) for p in parts(dit_latent(family, frames=frames))])


def assert_pairs_cached_between_checkpoints(run_report):
    """The run has cached steps; matching runs at its checkpoints only; each cached step reuses
    the plan its checkpoint matched for the same key (block, grid, batch, conds, timestep groups)."""
    checkpoints, events = run_report.checkpoints, run_report.events
    assert {e.step for e in events} - checkpoints, f"the run reaches cached steps (checkpoints {sorted(checkpoints)})"
    assert all(e.recomputed == (e.step in checkpoints) for e in events), "cached steps run no matching"
    matched = {(e.step, e.key): e.merged for e in events if e.recomputed}
    for e in events:
        if not e.recomputed:
            checkpoint = max(c for c in checkpoints if c <= e.step)
            assert matched.get((checkpoint, e.key)) == e.merged, f"step {e.step} reuses step {checkpoint}'s plan for {e.key}"


@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_threshold_one_is_bit_identical_and_zero_merges_in_every_block(pack, family, dit_model, cfg):
    baseline = run(family, dit_model, cfg=cfg)
    assert same(run(family, patch(pack, dit_model, threshold=1.0), cfg=cfg), baseline)
    patched = patch(pack, dit_model, threshold=0.0)
    merged = run(family, patched, cfg=cfg)
    assert torch.isfinite(flat(merged)).all() and not same(merged, baseline)
    events = report(patched).events
    assert {e.key.block[:2] for e in events} == BLOCKS[family]
    frames = FRAMES.get(family, 1)
    assert {e.key.grid for e in events} == {token_grid(family)} and {e.tokens for e in events} == {64 * frames}
    assert all(e.merged == 48 * frames for e in events), "threshold 0: every src of the 2×2 cells merges"
    assert not dit_model.model_options.get("transformer_options", {}).get("patches_replace")


@pytest.mark.parametrize("blocks,expected", [("double", "double_block"), ("single", "single_block")])
def test_dit_blocks_selects_the_blocks(pack, family, dit_model, blocks, expected, caplog):
    if blocks == "single" and all(kind == "double_block" for kind, _ in BLOCKS[family]):  # double blocks only
        with caplog.at_level("WARNING", logger="ca_tome"):
            patched = patch(pack, dit_model, dit_blocks=blocks)
        (warning,) = caplog.records
        assert "dit_blocks='single' selects no block of this model" in warning.getMessage()
        assert same(run(family, patched), run(family, dit_model)), "a model swapped in under 'single' runs unmerged"
        return
    patched = patch(pack, dit_model, dit_blocks=blocks)
    run(family, patched)
    assert {e.key.block[0] for e in report(patched).events} == {expected}


@pytest.mark.parametrize("case", [dict(grid=(9, 7)), dict(batch=2), dict(denoise=0.5), dict(steps=4, cfg=1.0)],
                         ids=["odd-grid", "batch2", "img2img", "4-step-cfg1"])
def test_odd_grids_batches_and_img2img_reuse_pairs_between_checkpoints(pack, family, dit_model, case):
    """On a schedule with cached steps ('every 2': steps 1 and 3 reuse what 0 and 2 matched; the
    presets recompute at every step of runs this short). The 4-step cfg-1 run is the distilled case."""
    frames = FRAMES.get(family, 1)
    if case.get("batch", 1) > 1 and family == "minimax":
        pytest.skip("MiniMax-H3 samples one video at a time (its sequence has no batch dimension)")
    if "denoise" in case:
        case = {**case, "latent": random_latent(family, frames, seed=4)}
    patched = patch(pack, dit_model, schedule="custom", custom_steps="every 2")
    out = run(family, patched, **case)
    grid = case.get("grid", GRID)
    expected = dit_latent(family, case.get("batch", 1), grid, frames)
    assert [p.shape for p in parts(out)] == [p.shape for p in parts(expected)] and torch.isfinite(flat(out)).all()
    events = report(patched).events
    assert {e.key.grid for e in events} == {token_grid(family, grid)} and sum(e.merged for e in events) > 0
    assert_pairs_cached_between_checkpoints(report(patched))


def recording(calls):
    """Another pack's block replacement, which CA-ToMe must wrap: records what each block receives."""
    def replacement(args, extras):
        # copies: Flux's blocks add their updates to ``img`` in place
        calls.append({name: args[name].clone() if isinstance(args.get(name), torch.Tensor) else None
                      for name in ("img", "txt", "pe", "vec")})
        return extras["original_block"](args)
    return replacement


def recorded_clones(model, kind, index):
    """Two clones of ``model`` whose block (kind, index) records its inputs, and their two call lists."""
    unmerged_calls, merged_calls = [], []
    plain, wrapped = model.clone(), model.clone()
    plain.set_model_patch_replace(recording(unmerged_calls), "dit", kind, index)
    wrapped.set_model_patch_replace(recording(merged_calls), "dit", kind, index)
    return plain, wrapped, unmerged_calls, merged_calls


@pytest.mark.parametrize("flux", ["flux", "flux2", "chroma"])
def test_flux_text_stays_whole_and_kept_tokens_keep_their_own_rope_rows(pack, flux):
    available(flux)
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(tiny_dit(flux), "single_block", 0)
    patched = patch(pack, wrapped, threshold=0.0, schedule="once")
    run(flux, plain, steps=1, cfg=1.0)
    run(flux, patched, steps=1, cfg=1.0)
    (before,), (after,) = unmerged_calls, merged_calls
    text = BLOCK_TEXT_TOKENS[flux]
    assert after["img"].shape[1] == text + 16 and before["img"].shape[1] == text + 64, "the other pack's patch ran, on 16 kept tokens"
    assert torch.equal(after["pe"][:, :, :text], before["pe"][:, :, :text]), "text RoPE rows untouched"
    rows_before = before["pe"][0, 0, text:].flatten(1)
    rows_after = after["pe"][0, 0, text:].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == sorted(positions) and positions == [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)], \
        "each kept token keeps its own RoPE row: the top-left of every cell, in order"


@pytest.mark.parametrize("flux", ["flux", "flux2", "qwen_image"])
def test_reference_image_tokens_pass_unmerged(pack, flux):
    """Kontext / Flux 2 / Qwen-Image-Edit: the reference latent's tokens follow the image grid in
    ``img``; only the grid is merged, the reference reaches every block whole and unchanged."""
    available(flux)
    reference = torch.randn(dit_latent(flux, grid=(4, 4)).shape, generator=torch.Generator().manual_seed(5))
    positive = dit_conditioning(flux, 1, reference_latents=[reference])
    steps = Sampling(steps=1, cfg=1.0)
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(tiny_dit(flux), "double_block", 0)
    baseline = sample_dit(plain, flux, steps, positive=positive)
    (before,) = unmerged_calls
    assert torch.equal(sample_dit(patch(pack, plain, threshold=1.0), flux, steps, positive=positive), baseline)
    patched = patch(pack, wrapped, threshold=0.0)
    assert torch.isfinite(sample_dit(patched, flux, steps, positive=positive)).all()
    (after,) = merged_calls
    assert before["img"].shape[1] == 64 + 16 and after["img"].shape[1] == 16 + 16, "16 kept grid tokens, then the reference"
    assert torch.equal(after["img"][:, 16:], before["img"][:, 64:]), "the reference tokens reach the block unchanged"
    assert {(e.key.grid, e.tokens) for e in report(patched).events} == {(token_grid(flux), 64)}


def test_another_packs_block_replacement_is_wrapped_not_dropped(pack):
    available("sd3")
    calls = []
    model = tiny_dit("sd3").clone()
    model.set_model_patch_replace(recording(calls), "dit", "double_block", 1)
    patched = patch(pack, model, threshold=0.0)
    run("sd3", patched, steps=1, cfg=1.0)
    assert [c["img"].shape[1] for c in calls] == [16], "the other pack's replacement ran once, on the merged tokens"


@pytest.mark.parametrize("refused,names", [("wan21_vace", "WAN21_Vace (VaceWanModel)"),
                                            ("chroma_radiance", "ChromaRadiance (ChromaRadiance)"),
                                            ("ltxv", "LTXV (LTXVModel)")],
                         ids=["wan21_vace", "chroma_radiance", "ltxv"])
def test_a_family_the_node_cannot_merge_runs_unmerged_with_one_warning(pack, refused, names, caplog):
    """Wan's subclasses, Chroma Radiance (Chroma's pixel-space subclass) and LTXV 0.9 (LTX-2's
    video-only predecessor) are other layouts: a workflow whose model was swapped to one still
    runs, exactly as without the node, and one warning names the model and what the node supports."""
    available(refused)
    model = tiny_dit(refused)
    with caplog.at_level("WARNING", logger="ca_tome"):
        unmerged = run(refused, patch(pack, model))
    (warning,) = caplog.records
    message = warning.getMessage()
    assert message.startswith(f"CA-ToMe: {names} is neither a UNet with self-attention nor a DiT layout"), message
    assert "(supported: SD1.x/SD2.x and SDXL UNets, Flux.1 and Flux 2, " in message and "Wan 2.1/2.2" in message
    assert message.endswith("; it runs unmerged."), message
    assert same(unmerged, run(refused, model))


def corners(frames=1):
    """The kept tokens at threshold 0 on 8 × 8 grids: every frame's cell corners, in order."""
    return [f * 64 + r * 8 + c for f in range(frames) for r in range(0, 8, 2) for c in range(0, 8, 2)]


def rope_positions(rows_before, rows_after):
    """Where each of the merged call's RoPE rows sits among the unmerged call's."""
    rows_before, rows_after = rows_before.flatten(1), rows_after.flatten(1)
    return [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]


def text_first(model):
    """Older hosts' HunyuanVideo joins [img, txt], not [txt, img] (``flipped_img_txt``)."""
    return not getattr(model.model.diffusion_model.double_blocks[0], "flipped_img_txt", False)


@pytest.mark.parametrize("family", ["flux", "chroma", "hunyuan_video"])
def test_double_blocks_keep_the_text_whole_and_the_kept_tokens_rope_rows(pack, family):
    """Double blocks see the grid alone in ``img`` and the text in ``txt``; ``pe`` spans the joint
    sequence (Hunyuan on older hosts: [img, txt]): the text and its rows stay, and every kept
    token keeps its own row."""
    available(family)
    model = tiny_dit(family)
    frames, text = FRAMES.get(family, 1), BLOCK_TEXT_TOKENS[family]
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(model, "double_block", 0)
    sample_dit(plain, family, Sampling(steps=1, cfg=1.0), frames=frames)
    sample_dit(patch(pack, wrapped, threshold=0.0, schedule="once"), family, Sampling(steps=1, cfg=1.0), frames=frames)
    (before,), (after,) = unmerged_calls, merged_calls
    assert before["img"].shape[1] == frames * 64 and after["img"].shape[1] == frames * 16
    assert torch.equal(after["txt"], before["txt"]), "the text stream is not merged"
    text_rows, grid_rows = (slice(0, text), slice(text, None)) if text_first(model) else (slice(-text, None), slice(0, -text))
    assert torch.equal(after["pe"][:, :, text_rows], before["pe"][:, :, text_rows]), "text RoPE rows untouched"
    assert rope_positions(before["pe"][0, 0, grid_rows], after["pe"][0, 0, grid_rows]) == corners(frames)


def recording_outputs(calls):
    """A block replacement recording what a block receives and what it returns."""
    def replacement(args, extras):
        given = args["img"].clone()  # Flux's blocks add their updates to ``img`` in place
        out = extras["original_block"](args)
        calls.append({"img": given, "out": out["img"].clone()})
        return out
    return replacement


@pytest.mark.parametrize("family", ["flux", "chroma", "hunyuan_video"])
def test_single_blocks_merge_the_image_slice_and_give_the_text_back_untouched(pack, family):
    """Single blocks see the joint sequence, and the grid is sliced from it at a start computed
    apart from the RoPE rows' offset. With only the single blocks merged, single block 0 sees
    the text exactly as without CA-ToMe (a slice off by one would merge a text token or leave an
    image token whole), and the text it returns reaches single block 1 as it returned it."""
    available(family)
    model = tiny_dit(family, **({"depth_single_blocks": 2} if family == "hunyuan_video" else {}))
    frames, text = FRAMES.get(family, 1), BLOCK_TEXT_TOKENS[family]
    calls = {"plain": [], "merged": []}
    clones = {"plain": model.clone(), "merged": model.clone()}
    for name, clone in clones.items():
        for index in (0, 1):
            clone.set_model_patch_replace(recording_outputs(calls[name]), "dit", "single_block", index)
    sample_dit(clones["plain"], family, Sampling(steps=1, cfg=1.0), frames=frames)
    patched = patch(pack, clones["merged"], threshold=0.0, schedule="once", dit_blocks="single")
    sample_dit(patched, family, Sampling(steps=1, cfg=1.0), frames=frames)
    (before, _), (first, second) = calls["plain"], calls["merged"]
    text_part = slice(0, text) if text_first(model) else slice(-text, None)
    assert before["img"].shape[1] == text + frames * 64 and first["img"].shape[1] == text + frames * 16
    assert not torch.allclose(before["img"][:, :text].mean(1), before["img"][:, text:].mean(1)), "text and image differ"
    assert torch.equal(first["img"][:, text_part], before["img"][:, text_part]), "the text reaches the block whole"
    torch.testing.assert_close(second["img"][:, text_part], first["out"][:, text_part], rtol=0, atol=1e-5,
                               msg="the text comes back as the block returned it")
    assert {e.key.block[:2] for e in report(patched).events} == {("single_block", 0), ("single_block", 1)}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_samples_unpatched(name):
    available(name)
    latent = sample_dit(tiny_dit(name), name, Sampling(steps=2))
    assert [p.shape for p in parts(latent)] == [p.shape for p in parts(dit_latent(name))]
    assert all(torch.isfinite(p).all() for p in parts(latent))


@pytest.mark.parametrize("name", ["flux", "qwen_image", "wan21", "hunyuan_video", "ltx2", "minimax", "zimage", "krea2"])
def test_the_stats_node_shows_a_dit_run(pack, tmp_path, monkeypatch, name):
    """Image and video runs (4-step ones: few-step models are the common case)."""
    import json

    import folder_paths

    available(name)
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    patched = pack.nodes.CATome.execute(tiny_dit(name), MID_SHARE_THRESHOLD.get(name, 0.3), "CONFIG_3", "", "auto", 2,
                                        "qkv", "min", record_stats=True).result[0]
    latent = run(name, patched, steps=4, cfg=1.0)
    (image,) = pack.nodes.CATomeStats.execute(patched, {"samples": latent}, f"stats/{name}").result
    assert image.shape == (1, 450, 1500, 3) and image.std() > 0.01
    (written,) = (tmp_path / "stats").glob(f"{name}_*.json")
    numbers = json.loads(written.read_text())
    assert {tuple(r["block"][:2]) for r in numbers["recorded"]} == BLOCKS[name]
    assert {tuple(r["grid"]) for r in numbers["recorded"]} == {token_grid(name)}
    assert len(numbers["recorded"]) == 4 * len(BLOCKS[name]) and numbers["merged_fraction"] > 0


def no_update_for_merged_tokens(x, merged, output, plan, start, stored=None):
    """A broken combination: merged tokens keep their input, only kept tokens get an update."""
    kept = plan.token_count - plan.merged_count
    update = output - merged
    grid = plan.unmerge(update[:, start:start + kept]).clone()
    grid.scatter_(1, plan.merged_src.unsqueeze(-1).expand(-1, -1, grid.shape[-1]), 0)
    return x + torch.cat((update[:, :start], grid, update[:, start + kept:]), dim=1)


def overwritten_by_their_partner(x, merged, output, plan, start, stored=None):
    """A broken combination (plain ToMe's unmerge): merged tokens take their partner's output."""
    kept = plan.token_count - plan.merged_count
    return torch.cat((output[:, :start], plan.unmerge(output[:, start:start + kept]), output[:, start + kept:]), dim=1)


def cells_of_one_pattern(family, frames, seed):
    """A latent whose 2×2-token cells each hold one random pattern at four amplitudes (0.5 to 10.5)
    (the audio of LTX-2 and MiniMax-H3 random)."""
    generator = torch.Generator().manual_seed(seed)
    grid, *rest = parts(dit_latent(family, frames=frames))
    *lead, height, width = grid.shape
    p, rows, columns = PATCH[family], height // (2 * PATCH[family]), width // (2 * PATCH[family])
    pattern = 5 * torch.randn(*lead, rows, 1, p, columns, 1, p, generator=generator)
    amplitude = 0.5 + 10 * torch.rand(lead[0], 1, *lead[2:], rows, 2, 1, columns, 2, 1, generator=generator)
    return nested_like([(pattern * amplitude).reshape(grid.shape), *(torch.randn(r.shape, generator=generator) for r in rest)])


def test_the_block_update_survives_merging_and_the_error_grows_with_what_is_merged(pack, family, dit_model, monkeypatch):
    """The unmerged update is added back to every token's own residual stream: merging a few
    tokens stays closer to the unpatched latent than merging many, and at the same share closer
    than giving merged tokens no update or overwriting them with their partner's output.

    An img2img run (denoise 0.3) on cells of one pattern at four amplitudes tells the three apart:
    a cell's tokens get nearly the same update (the blocks normalise their input) on different
    residual streams, so the right combination stays close where either broken one does not. On
    noise, random weights leave them close (Flux 2: 0.77–0.91 of the broken error over three model
    seeds, one CPU failing a margin of 0.8). Here, over model seeds 0–2, the right error was at most
    0.49 of either broken one, except Chroma's overwritten tokens (0.65–0.77: its random modulation
    makes each block's update as large as its input); the margins leave room for other CPUs."""
    frames = FRAMES.get(family, 1)
    sampling = dict(cfg=1.0, denoise=0.3, latent=cells_of_one_pattern(family, frames, seed=10))
    baseline = flat(run(family, dit_model, **sampling))

    def error(ratio):
        patched = pack.nodes.CATomeFixedRatio.execute(dit_model, ratio, "all", "", "auto", 2, "qkv").result[0]
        return float((flat(run(family, patched, **sampling)) - baseline).abs().mean())

    errors = [error(ratio) for ratio in (0.05, 0.25, 0.5)]
    assert errors[0] < errors[1] < errors[2], errors
    assert errors[0] < 0.2 * float(baseline.abs().mean()), errors
    for broken in (no_update_for_merged_tokens, overwritten_by_their_partner):
        with monkeypatch.context() as patched_module:
            patched_module.setattr(pack.ca_tome.comfyui.dit, "unmerged_output", broken)
            margin = BROKEN_MARGIN.get((family, broken.__name__), 0.7)
            assert errors[2] < margin * error(0.5), f"{broken.__doc__} {errors[2]:.4g} against {error(0.5):.4g}"


BROKEN_MARGIN = {("chroma", "overwritten_by_their_partner"): 0.9}


# 2 to 8 channels, 10× to 1000× the median channel magnitude, constant or varying over the image.
# A threshold at which these random models merge neither nothing nor everything (the video
# tokens, matched across three frames, are more alike).
MID_SHARE_THRESHOLD = {"wan21": 0.45, "hunyuan_video": 0.45, "ltx2": 0.38, "minimax": 0.38, "krea2": 0.4}
# Video: the first latent frame's far larger (real Wan's are largest there).
MASSIVE_CASES = [dict(channels=2, scale=10, smooth=False), dict(channels=2, scale=1000, smooth=True),
                 dict(channels=8, scale=1000, smooth=False), dict(channels=8, scale=10, smooth=True),
                 dict(channels=4, scale=100, smooth=False, first_frame=5.0)]


def massive_id(case: dict) -> str:
    first = f"-first-frame-{case['first_frame']:g}x" if "first_frame" in case else ""
    return f"{case['channels']}ch-{case['scale']}x-{'smooth' if case['smooth'] else 'constant'}{first}"


@pytest.mark.parametrize("massive", MASSIVE_CASES, ids=massive_id)
def test_massive_activations_do_not_decide_what_merges(pack, family, dit_model, massive):
    """Real DiTs carry a few channels far larger than the rest in every image token. The model here
    computes the same with and without them (its blocks carry them unseen), so the merged share at
    a fixed threshold must stay where it is without them: on the raw residual stream it goes to
    the 75 % cap. Threshold 1 stays bit-identical to the unpatched model that has them.
    On video, the constant channels are checked with both dst searches; the smooth ones, a spatial
    field that makes neighbours alike as image content does, with the global search only: in a
    neighbourhood every candidate is a neighbour, so such a field raises every src's best match
    (8 such channels of the tiny models' 64 moved the share by 6 points there; a real model's
    thousands of channels dilute them)."""
    from devkit.dit_models import with_massive_channels

    grid = (12, 12)
    frames = FRAMES.get(family, 1)  # every frame's tokens carry them (Wan's 3-D embedder sees frames itself)
    if "first_frame" in massive and frames == 1:
        pytest.skip("a video case")
    without = with_massive_channels(dit_model, family, **{**massive, "scale": 0}, grid=grid, frames=frames)
    with_them = with_massive_channels(dit_model, family, **massive, grid=grid, frames=frames)
    baseline = run(family, with_them, grid=grid, cfg=1.0)
    assert same(run(family, without, grid=grid, cfg=1.0), baseline), "the injected channels change nothing else"
    assert same(run(family, patch(pack, with_them, threshold=1.0), grid=grid, cfg=1.0), baseline)
    searches = ["global"] if massive["smooth"] or frames == 1 else ["neighbourhood", "global"]
    for search in searches:
        shares = []
        for model in (without, with_them):
            patched = patch(pack, model, threshold=MID_SHARE_THRESHOLD.get(family, 0.3), video_search=search)
            run(family, patched, grid=grid, cfg=1.0)
            shares.append(report(patched).merged_fraction)
        assert 0.1 < shares[0] < 0.7, f"the threshold sits inside the range it can move in: {shares} ({search})"
        assert abs(shares[1] - shares[0]) <= 0.05, f"merged share without / with massive channels: {shares} ({search})"


def test_reference_tokens_modulated_at_timestep_zero_run_unmerged(pack, caplog):
    """Flux 2's ``index_timestep_zero`` (set by the core Flux KV Cache node, or by the conditioning)
    modulates reference tokens through token ranges fixed for the unmerged sequence: those calls
    run unmerged, as the model without CA-ToMe, and the log says why."""
    import inspect
    import logging

    import comfy.ldm.flux.model

    available("flux2")
    if "index_timestep_zero" not in inspect.getsource(comfy.ldm.flux.model):
        pytest.skip("this ComfyUI host's Flux has no index_timestep_zero reference mode")
    reference = torch.randn(dit_latent("flux2", grid=(4, 4)).shape, generator=torch.Generator().manual_seed(5))
    steps = Sampling(steps=2, cfg=1.0)
    model = tiny_dit("flux2")
    kv_cache = getattr(pytest.importorskip("comfy_extras.nodes_flux"), "FluxKVCache", None)
    positive = dit_conditioning("flux2", 1, reference_latents=[reference])
    by_conditioning = dit_conditioning("flux2", 1, reference_latents=[reference],
                                       reference_latents_method="index_timestep_zero")
    cases = [(model, by_conditioning)] + ([(kv_cache.execute(model).result[0], positive)] if kv_cache else [])
    for source, conditioning in cases:
        baseline = sample_dit(source, "flux2", steps, positive=conditioning)
        patched = patch(pack, source, threshold=0.0)
        with caplog.at_level(logging.INFO, logger="ca_tome"):
            assert torch.equal(sample_dit(patched, "flux2", steps, positive=conditioning), baseline)
        assert report(patched).events == ()
        assert caplog.text.count("modulates its reference-image tokens by position") == 1, "once per run"
        caplog.clear()
    merged = patch(pack, model, threshold=0.0)
    sample_dit(merged, "flux2", steps, positive=positive)
    assert report(merged).events, "the default reference mode ('offset' / 'index') still merges"


def test_wan_video_merges_within_frames_and_kept_tokens_keep_their_own_rope_rows(pack):
    """Wan: img is the video grid, frame after frame; cells are 2×2 within a frame, so the kept
    tokens are every frame's cell corners, in order, each with its own RoPE row (``pe`` spans img
    along dim 1); the text stream reaches the block whole."""
    available("wan21")
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(tiny_dit("wan21"), "double_block", 0)
    patched = patch(pack, wrapped, threshold=0.0, schedule="once")
    run("wan21", plain, steps=1, cfg=1.0)
    run("wan21", patched, steps=1, cfg=1.0)
    (before,), (after,) = unmerged_calls, merged_calls
    frames = FRAMES["wan21"]
    assert before["img"].shape[1] == frames * 64 and after["img"].shape[1] == frames * 16
    assert torch.equal(after["txt"], before["txt"]), "the text stream is not merged"
    rows_before, rows_after = before["pe"][0].flatten(1), after["pe"][0].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    corners = [f * 64 + r * 8 + c for f in range(frames) for r in range(0, 8, 2) for c in range(0, 8, 2)]
    assert positions == corners, "each kept token keeps its own RoPE row: every frame's cell corners, in order"


def test_spatio_temporal_cells_span_two_frames_and_still_never_mix_timesteps(pack):
    """'spatio-temporal' cells: the dst of each cell is in the earlier of two frames. With every
    src merged, frame 0's corners stay, and frames 1 and 2 stay whole: the first frame merges only
    within itself, so frame 1's srcs lose their cell's dst, and the last frame holds none (3 frames).
    With Wan 2.2 5B's clean first frame, the noisy frames find no dst of their own timestep and stay
    whole."""
    available("wan21")
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(tiny_dit("wan21"), "double_block", 0)
    patched = patch(pack, wrapped, threshold=0.0, schedule="once", video_cells="spatio-temporal")
    run("wan21", plain, steps=1, cfg=1.0)
    run("wan21", patched, steps=1, cfg=1.0)
    (before,), (after,) = unmerged_calls, merged_calls
    rows_before, rows_after = before["pe"][0].flatten(1), after["pe"][0].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)] + list(range(64, 192))
    family = available("wan22_5b")
    frames = FRAMES["wan21"]
    mask = torch.ones(1, 1, frames, *(side * 2 for side in GRID))
    mask[:, :, 0] = 0
    patched = patch(pack, tiny_dit(family), threshold=0.0, video_cells="spatio-temporal")
    out = sample_dit(patched, family, Sampling(steps=2, cfg=1.0, noise_mask=mask), frames=frames)
    assert torch.isfinite(out).all()
    assert {e.merged for e in report(patched).events} == {48}, "frame 0's srcs only"


def test_video_dsts_are_searched_in_a_neighbourhood_unless_global_is_asked_for(pack):
    """Wan on 7 latent frames of 8 × 24 tokens (4 × 12 cells): the default search reaches two cells
    and one frame around a src's own cell, so at the same t it merges fewer tokens than the global
    search (a src's best dst in reach is at most as similar as its best anywhere), and the node's
    default is that search."""
    available("wan21")
    model = tiny_dit("wan21")
    frames, grid = 7, (16, 48)

    def merged(**inputs):
        patched = patch(pack, model, threshold=0.2, schedule="once", **inputs)
        out = sample_dit(patched, "wan21", Sampling(steps=1, cfg=1.0), frames=frames, grid=grid)
        return out, sum(e.merged for e in report(patched).events)

    default, default_merged = merged()
    near, near_merged = merged(video_search="neighbourhood")
    _, everywhere_merged = merged(video_search="global")
    assert torch.equal(default, near), "the default is the neighbourhood search"
    assert 0 < near_merged < everywhere_merged


def test_wan_image_to_video_keeps_the_clip_tokens_whole(pack):
    """Wan i2v: the start image enters as latent channels (same token grid) and as 257 CLIP vision
    tokens before the text in cross-attention; only the video grid merges."""
    available("wan21_i2v")
    model = tiny_dit("wan21_i2v")
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(model, "double_block", 1)
    sampling = dict(steps=2, cfg=3.5)
    frames = FRAMES["wan21"]
    baseline = sample_dit(plain, "wan21_i2v", Sampling(**sampling), frames=frames)
    assert torch.equal(sample_dit(patch(pack, plain, threshold=1.0), "wan21_i2v", Sampling(**sampling), frames=frames),
                       baseline)
    patched = patch(pack, wrapped, threshold=0.0)
    merged = sample_dit(patched, "wan21_i2v", Sampling(**sampling), frames=frames)
    assert torch.isfinite(merged).all() and not torch.equal(merged, baseline)
    before, after = unmerged_calls[0], merged_calls[0]
    assert before["txt"].shape[1] == 257 + 16 and torch.equal(after["txt"], before["txt"]), "CLIP + text tokens whole"
    assert after["img"].shape[1] == frames * 16 and before["img"].shape[1] == frames * 64
    assert {e.key.grid for e in report(patched).events} == {(frames, 8, 8)}


def test_wan22_5b_first_frame_at_timestep_zero_merges_only_with_itself(pack):
    """Wan 2.2 5B image-to-video: a noise mask keeps the first frame clean, so the blocks get one
    timestep modulation row per frame (``vec`` [B, frames, 6, dim]). The kept tokens keep their
    frame's row, and the clean frame's tokens never merge with the noisy ones."""
    family = available("wan22_5b")
    frames = FRAMES["wan21"]
    model = tiny_dit(family)
    latent = torch.randn(dit_latent(family, frames=frames).shape, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 1, *latent.shape[2:])
    mask[:, :, 0] = 0
    sampling = Sampling(steps=2, cfg=3.5, latent=latent, noise_mask=mask)
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(model, "double_block", 0)
    baseline = sample_dit(plain, family, sampling, frames=frames)
    assert torch.equal(sample_dit(patch(pack, plain, threshold=1.0), family, sampling, frames=frames), baseline)
    patched = patch(pack, wrapped, threshold=0.0)
    merged = sample_dit(patched, family, sampling, frames=frames)
    assert torch.isfinite(merged).all() and not torch.equal(merged, baseline)
    events = report(patched).events
    assert {e.key.groups for e in events} == {(0, 1, 1)}, "frame 0 apart, the noisy frames together"
    assert all(e.merged == 48 * frames for e in events), "every src still finds a dst of its own timestep"

    before, after = unmerged_calls[0], merged_calls[0]
    assert before["vec"].shape[1] == frames and after["vec"].shape[1] == after["img"].shape[1] == frames * 16
    rows = after["vec"][0].flatten(1)
    frame_of_kept = [int(torch.nonzero((before["vec"][0].flatten(1) == row).all(-1))[0]) for row in rows]
    assert frame_of_kept == [0] * 16 + [1] * 32, \
        "each kept token keeps its own frame's timestep row (frames 1 and 2 share one, found first at 1)"
    assert not torch.equal(before["vec"][0, 0], before["vec"][0, 1]), "the clean frame has its own timestep"
    # Without a noise mask the model gives every token one row, as Wan 2.1.
    sample_dit(patched, family, Sampling(steps=1, cfg=1.0), frames=frames)
    assert merged_calls[-1]["vec"].shape[1] == 1 and {e.key.groups for e in report(patched).events} == {()}


def test_qwen_image_text_stays_whole_and_kept_tokens_keep_their_own_rope_rows(pack):
    """Qwen-Image: a double block sees the grid alone in ``img`` and the text in ``txt``; ``pe``
    spans [txt, img] along dim 2, and every kept token keeps its own row."""
    available("qwen_image")
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(tiny_dit("qwen_image"), "double_block", 0)
    run("qwen_image", plain, steps=1, cfg=1.0)
    run("qwen_image", patch(pack, wrapped, threshold=0.0, schedule="once"), steps=1, cfg=1.0)
    (before,), (after,) = unmerged_calls, merged_calls
    text = BLOCK_TEXT_TOKENS["qwen_image"]
    assert before["img"].shape[1] == 64 and after["img"].shape[1] == 16
    assert torch.equal(after["txt"], before["txt"]) and torch.equal(after["pe"][:, :, :text], before["pe"][:, :, :text])
    rows_before, rows_after = before["pe"][0, 0, text:].flatten(1), after["pe"][0, 0, text:].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]


def test_qwen_image_edit_2511_references_at_timestep_zero_and_layered_latents_run_unmerged(pack, caplog):
    """Edit 2511 modulates its reference tokens at t=0 by position (a range fixed for the unmerged
    sequence), and Qwen-Image-Layered's frames are image layers: both run as without CA-ToMe."""
    import logging

    available("qwen_image")
    model = tiny_dit("qwen_image")
    reference = torch.randn(dit_latent("qwen_image", grid=(4, 4)).shape, generator=torch.Generator().manual_seed(5))
    steps = Sampling(steps=2, cfg=1.0)
    source = __import__("inspect").getsource(type(model.model.diffusion_model))
    cases = {"layered": (None, dict(frames=3))} if "t_len > 1" in source else {}  # older hosts: one frame only
    if "index_timestep_zero" in source:
        cases["2511"] = (dit_conditioning("qwen_image", 1, reference_latents=[reference],
                                          reference_latents_method="index_timestep_zero"), {})
    if not cases:
        pytest.skip("this ComfyUI host's Qwen-Image has neither layered latents nor timestep-zero references")
    for name, (positive, shape) in cases.items():
        baseline = sample_dit(model, "qwen_image", steps, positive=positive, **shape)
        patched = patch(pack, model, threshold=0.0)
        with caplog.at_level(logging.INFO, logger="ca_tome"):
            assert torch.equal(sample_dit(patched, "qwen_image", steps, positive=positive, **shape), baseline), name
        assert report(patched).events == (), name
        assert ("image layers" if name == "layered" else "by position") in caplog.text
        caplog.clear()


@pytest.mark.parametrize("hunyuan", ["hunyuan_video", "hunyuan_video15"])
def test_hunyuan_video_kept_tokens_keep_their_rope_rows_in_either_joint_order(pack, hunyuan):
    """HunyuanVideo's single blocks see the joint sequence — [txt, img] on newer hosts, [img, txt]
    on older ones (``flipped_img_txt``) — and so do its RoPE rows: either way the kept tokens are
    every frame's cell corners with their own rows, and the text rows stay where they were. 1.5's
    text stream is longer than the prompt (vision and glyph tokens), and the grid starts after it."""
    available(hunyuan)
    model = tiny_dit(hunyuan)
    text_first = not getattr(model.model.diffusion_model.double_blocks[0], "flipped_img_txt", False)
    plain, wrapped, unmerged_calls, merged_calls = recorded_clones(model, "single_block", 0)
    frames = FRAMES["hunyuan_video"]
    sample_dit(plain, hunyuan, Sampling(steps=1, cfg=1.0), frames=frames)
    sample_dit(patch(pack, wrapped, threshold=0.0, schedule="once"), hunyuan, Sampling(steps=1, cfg=1.0), frames=frames)
    (before,), (after,) = unmerged_calls, merged_calls
    text = BLOCK_TEXT_TOKENS[hunyuan]
    assert before["img"].shape[1] == text + frames * 64 and after["img"].shape[1] == text + frames * 16
    grid_before = before["pe"][0, 0, text:] if text_first else before["pe"][0, 0, :frames * 64]
    grid_after = after["pe"][0, 0, text:] if text_first else after["pe"][0, 0, :frames * 16]
    text_rows = (lambda pe: pe[:, :, :text]) if text_first else (lambda pe: pe[:, :, -text:])  # noqa: E731
    assert torch.equal(text_rows(after["pe"]), text_rows(before["pe"]))
    rows_before, rows_after = grid_before.flatten(1), grid_after.flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == [f * 64 + r * 8 + c for f in range(frames) for r in range(0, 8, 2) for c in range(0, 8, 2)]


def test_hunyuan_guiding_frames_and_reference_latents_run_unmerged(pack, caplog):
    """Image-to-video 'v2 replace' modulates the guiding frame through token ranges fixed for the
    unmerged sequence, and reference latents sit before the video: both run as without CA-ToMe."""
    import logging

    available("hunyuan_video")
    model = tiny_dit("hunyuan_video")
    frames = FRAMES["hunyuan_video"]
    reference = torch.randn(dit_latent("hunyuan_video", frames=1).shape, generator=torch.Generator().manual_seed(5))
    cases = {"by token ranges": dict(guiding_frame_index=0), "before the video": dict(ref_latent=reference)}
    for message, extra in cases.items():
        positive = dit_conditioning("hunyuan_video", 1, **extra)
        steps = Sampling(steps=2, cfg=1.0)
        baseline = sample_dit(model, "hunyuan_video", steps, positive=positive, frames=frames)
        patched = patch(pack, model, threshold=0.0)
        with caplog.at_level(logging.INFO, logger="ca_tome"):
            assert torch.equal(sample_dit(patched, "hunyuan_video", steps, positive=positive, frames=frames), baseline)
        assert report(patched).events == () and message in caplog.text, message
        caplog.clear()


def assert_runs_unmerged(pack, caplog, model, family, reason, sampling, **conditioning):
    """A run whose calls the node leaves whole: bit-identical to the model without CA-ToMe, no
    plan asked for, and one log line with the reason."""
    import logging

    baseline = sample_dit(model, family, sampling, **conditioning)
    patched = patch(pack, model, threshold=0.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ca_tome"):
        assert same(sample_dit(patched, family, sampling, **conditioning), baseline)
    assert report(patched).events == ()
    assert caplog.text.count(reason) == 1, caplog.text


def test_wan_reference_tokens_before_the_video_run_unmerged(pack, caplog):
    """Wan Fun Control's reference image (``ref_conv``; the conditioning's ``reference_latents``,
    as Wan22FunControlToVideo sets them) puts its tokens before the video: those calls run whole.
    Without the reference the same model merges."""
    import node_helpers

    available("wan21")
    model = tiny_dit("wan21", in_dim_ref_conv=16)
    frames = FRAMES["wan21"]
    reference = torch.randn(dit_latent("wan21", frames=1).shape, generator=torch.Generator().manual_seed(5))
    positive, negative = (node_helpers.conditioning_set_values(dit_conditioning("wan21", seed), {"reference_latents": [reference]},
                                                               append=True) for seed in (1, 2))
    assert_runs_unmerged(pack, caplog, model, "wan21", "puts reference tokens before the video tokens",
                         Sampling(steps=2, cfg=3.5), positive=positive, negative=negative, frames=frames)
    merged = patch(pack, model, threshold=0.0)
    sample_dit(merged, "wan21", Sampling(steps=1, cfg=1.0), frames=frames)
    assert report(merged).events


def ltx_recording(calls):
    """A block replacement recording what an LTX-2 block receives: img = (video, audio)."""
    def replacement(args, extras):
        video, audio = args["img"]
        timestep = args["v_timestep"]
        calls.append({"video": video.clone(), "audio": audio.clone(), "pe": args["v_pe"][0].clone(),
                      "timestep": (timestep if isinstance(timestep, torch.Tensor) else timestep.expand()).clone()})
        return extras["original_block"](args)
    return replacement


def test_ltx2_merges_the_video_stream_and_passes_the_audio_whole(pack):
    """LTX-2 image-to-video: the first video frame is kept clean (a noise mask, as
    LTXVImgToVideoInplace gives), so the video timesteps come one row per frame. Only the video
    grid merges, never a clean token with a noisy one; the kept tokens keep their own RoPE and
    timestep rows; the audio tokens reach the block whole."""
    import comfy.nested_tensor

    family = available("ltx2")
    frames = FRAMES[family]
    model = tiny_dit(family)
    video_mask = torch.ones(1, 1, frames, *GRID)
    video_mask[:, :, 0] = 0
    mask = comfy.nested_tensor.NestedTensor([video_mask, torch.ones(1, 1, 5, 16)])
    latent = comfy.nested_tensor.NestedTensor([torch.randn(1, 128, frames, *GRID, generator=torch.Generator().manual_seed(3)),
                                               torch.zeros(1, 8, 5, 16)])
    for cfg in (1.0, 3.5):
        sampling = Sampling(steps=2, cfg=cfg, latent=latent, noise_mask=mask)
        baseline = parts(sample_dit(model, family, sampling, frames=frames))
        identical = parts(sample_dit(patch(pack, model, threshold=1.0), family, sampling, frames=frames))
        assert all(torch.equal(a, b) for a, b in zip(identical, baseline)), cfg
    unmerged_calls, merged_calls = [], []
    plain, wrapped = model.clone(), model.clone()
    plain.set_model_patch_replace(ltx_recording(unmerged_calls), "dit", "double_block", 0)
    wrapped.set_model_patch_replace(ltx_recording(merged_calls), "dit", "double_block", 0)
    sampling = Sampling(steps=1, cfg=1.0, latent=latent, noise_mask=mask)
    sample_dit(plain, family, sampling, frames=frames)
    patched = patch(pack, wrapped, threshold=0.0)
    merged = parts(sample_dit(patched, family, sampling, frames=frames))
    assert all(torch.isfinite(p).all() for p in merged)
    (before,), (after,) = unmerged_calls, merged_calls
    assert before["video"].shape[1] == frames * 64 and after["video"].shape[1] == frames * 16
    assert torch.equal(after["audio"], before["audio"]), "the audio stream is not merged"
    events = report(patched).events
    assert {e.key.groups for e in events} == {(0, 1, 1)} and all(e.merged == 48 * frames for e in events)
    rows_before, rows_after = before["pe"][0].flatten(1), after["pe"][0].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == [f * 64 + r * 8 + c for f in range(frames) for r in range(0, 8, 2) for c in range(0, 8, 2)]
    assert not torch.equal(before["timestep"][0, 0], before["timestep"][0, 64]), "the clean frame has its own timestep"
    assert torch.equal(after["timestep"][0, :16], before["timestep"][0, :1].expand(16, -1)), "kept clean tokens: t=0"
    assert torch.equal(after["timestep"][0, 16:], before["timestep"][0, 64:65].expand(32, -1))


def test_ltx2_guide_frames_run_unmerged(pack, caplog):
    """LTXVAddGuide appends a guide's latent frames to the video and their positions
    (``keyframe_idxs``) to the conditioning; the blocks attend to them through a mask fixed for the
    unmerged sequence, so those calls run whole. (The guide is a random latent given to the node's
    own append step, in place of a VAE-encoded image.)"""
    import comfy.nested_tensor
    from comfy_extras.nodes_lt import LTXVAddGuide

    family = available("ltx2")
    frames = FRAMES[family]
    video, audio = dit_latent(family, frames=frames).unbind()
    guide = torch.randn(1, 128, 1, *GRID, generator=torch.Generator().manual_seed(6))
    positive, negative, video, video_mask = LTXVAddGuide.append_keyframe(
        dit_conditioning(family, 1), dit_conditioning(family, 2), 0, video, torch.ones(1, 1, frames, 1, 1), guide, 1.0,
        (8, 32, 32))
    latent = comfy.nested_tensor.NestedTensor([video, audio])
    mask = comfy.nested_tensor.NestedTensor([video_mask.expand(-1, -1, -1, *GRID).contiguous(), torch.ones(1, 1, 5, 16)])
    assert_runs_unmerged(pack, caplog, tiny_dit(family), family, "appends guide frames (LTXVAddGuide)",
                         Sampling(steps=2, cfg=3.5, latent=latent, noise_mask=mask), positive=positive, negative=negative,
                         frames=frames + 1)


def minimax_recording(calls):
    """A block replacement recording what a MiniMax-H3 block receives: one unbatched sequence."""
    def replacement(args, extras):
        segments = [(a, b, r.clone() if isinstance(r, torch.Tensor) else r) for a, b, r in args["mod_segments"]]
        calls.append({"img": args["img"].clone(), "rope": args["rope_freqs"].clone(), "segments": segments})
        return extras["original_block"](args)
    return replacement


@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_minimax_merges_the_video_segment_only(pack, cfg):
    """MiniMax-H3: img is [text, audio, video] without a batch dimension (cond and uncond run in
    separate calls); only the video at its end merges, its RoPE rows follow the kept tokens, its
    modulation range shrinks to them, and the text and audio reach the block whole."""
    family = available("minimax")
    frames = FRAMES[family]
    model = tiny_dit(family)
    sampling = Sampling(steps=2, cfg=cfg)
    baseline = parts(sample_dit(model, family, sampling, frames=frames))
    identical = parts(sample_dit(patch(pack, model, threshold=1.0), family, sampling, frames=frames))
    assert all(torch.equal(a, b) for a, b in zip(identical, baseline))
    unmerged_calls, merged_calls = [], []
    plain, wrapped = model.clone(), model.clone()
    plain.set_model_patch_replace(minimax_recording(unmerged_calls), "dit", "double_block", 0)
    wrapped.set_model_patch_replace(minimax_recording(merged_calls), "dit", "double_block", 0)
    sample_dit(plain, family, sampling, frames=frames)
    patched = patch(pack, wrapped, threshold=0.0)
    merged = parts(sample_dit(patched, family, sampling, frames=frames))
    assert all(torch.isfinite(p).all() for p in merged) and not torch.equal(merged[0], baseline[0])
    before, after = unmerged_calls[0], merged_calls[0]
    video = frames * 64
    start = before["img"].shape[0] - video
    assert after["img"].shape[0] == start + frames * 16
    assert torch.equal(after["img"][:start], before["img"][:start]), "text and audio whole"
    assert after["segments"][:-1] == before["segments"][:-1]
    assert after["segments"][-1] == (start, start + frames * 16, before["segments"][-1][2])
    rows_before, rows_after = before["rope"][0, start:].flatten(1), after["rope"][0, start:].flatten(1)
    positions = [int(torch.nonzero((rows_before == row).all(-1))[0]) for row in rows_after]
    assert positions == [f * 64 + r * 8 + c for f in range(frames) for r in range(0, 8, 2) for c in range(0, 8, 2)]
    assert {e.key.grid for e in report(patched).events} == {token_grid(family)}
    assert len(report(patched).events) == 2 * 2 * (2 if cfg > 1 else 1), "cond and uncond in separate calls"


def test_minimax_tokens_a_mask_keeps_clean_merge_only_among_themselves(pack):
    """A mask keeping the first video frame: that frame's tokens get their own modulation row each
    (``mod_segments`` then holds a row per video token), so they merge only with each other, and
    every kept token keeps its row."""
    import comfy.nested_tensor

    family = available("minimax")
    frames = FRAMES[family]
    video_mask = torch.ones(1, 1, frames, *(side * 2 for side in GRID))
    video_mask[:, :, 0] = 0
    mask = comfy.nested_tensor.NestedTensor([video_mask, torch.ones(1, 1, 2, 5)])
    latent = dit_latent(family, frames=frames)
    calls = []
    model = tiny_dit(family)
    model.set_model_patch_replace(minimax_recording(calls), "dit", "double_block", 1)
    patched = patch(pack, model, threshold=0.0)
    out = parts(sample_dit(patched, family, Sampling(steps=2, cfg=1.0, latent=latent, noise_mask=mask), frames=frames))
    assert all(torch.isfinite(p).all() for p in out)
    events = report(patched).events
    assert {e.key.groups for e in events} == {((0, 64), (1, 128))} and all(e.merged == 48 * frames for e in events)
    rows = calls[-1]["segments"][-1][2]
    assert isinstance(rows, torch.Tensor) and rows.numel() == frames * 16
    assert len(set(rows[:16].tolist())) == 1 and len(set(rows[16:].tolist())) == 1 and rows[0] != rows[16], \
        "the kept clean tokens keep their row, the kept noisy ones theirs"
