"""Long videos sampled in context windows (ComfyUI's core context-window nodes): each window of
frames is its own model call within a step, with the same conds and, usually, the same length.
Every window must be matched on its own tokens, and reuse only its own pairs at cached steps."""

import collections
import inspect

import pytest
import torch

from devkit.dit_models import missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling, load_pack

FRAMES, WINDOW, OVERLAP = 9, 4, 1  # latent frames: three windows of four, overlapping by one
STEPS, CHECKPOINTS = 4, "0, 2"


def windowed(model, schedule):
    """``model`` through the core Wan context-window node (0.3.75 and 0.33 take different inputs)."""
    nodes = pytest.importorskip("comfy_extras.nodes_context_windows")
    node = nodes.WanContextWindowsManualNode
    inputs = dict(context_length=4 * WINDOW - 3, context_overlap=4 * OVERLAP, context_schedule=schedule,
                  context_stride=1, closed_loop=False, fuse_method="pyramid", freenoise=False)
    accepted = inspect.signature(node.execute).parameters
    return node.execute(model, **{name: value for name, value in inputs.items() if name in accepted}).result[0]


def window_recorder(calls):
    """A block replacement recording the frames each call's context window covers (what CA-ToMe wraps)."""
    def replacement(args, extras):
        window = args["transformer_options"].get("context_window")
        calls.append(tuple(window.index_list) if window is not None else None)
        return extras["original_block"](args)
    return replacement


@pytest.mark.parametrize("schedule", ["standard_static", "standard_uniform"])
def test_every_context_window_is_matched_on_its_own_tokens_and_reuses_only_its_own_pairs(pack, schedule):
    """Static windows stay put: one matching per window and block at each checkpoint, none at cached
    steps. Uniform ones (the Wan node's default) move from step to step: a window new at a cached step
    is matched then. Either way every call files its pairs under the frames it covers."""
    if missing_classes("wan21"):
        pytest.skip("this ComfyUI host has no Wan")
    model = windowed(tiny_dit("wan21"), schedule)
    calls = []
    model.set_model_patch_replace(window_recorder(calls), "dit", "double_block", 0)
    patched = pack.nodes.CATome.execute(model, 0.0, "custom", CHECKPOINTS, "auto", 2, "qkv", "min").result[0]
    out = sample_dit(patched, "wan21", Sampling(steps=STEPS, cfg=1.0), frames=FRAMES)
    assert out.shape[2] == FRAMES and torch.isfinite(out).all()

    report = load_pack().ca_tome.comfyui.last_report(patched)
    per_step = collections.defaultdict(list)
    for event in report.events:
        per_step[event.step].append(event)
    blocks = {event.key.block for event in report.events}
    matched_in_epoch = set()
    for step, events in sorted(per_step.items()):
        windows = {event.key.window[0] for event in events}
        assert len(windows) >= 2 and collections.Counter(e.key.window[0] for e in events) == dict.fromkeys(windows, len(blocks))
        if step in (0, 2):
            matched_in_epoch = set()
            assert all(event.recomputed for event in events), f"checkpoint {step}: every window and block matches"
        for event in events:
            assert event.recomputed == (event.key not in matched_in_epoch), \
                f"step {step}: a window reuses pairs if and only if it was matched since the checkpoint"
            matched_in_epoch.add(event.key)
    if schedule == "standard_static":
        assert {len({e.key.window for e in events}) for events in per_step.values()} == {3}, "three windows"
        assert report.recomputed_steps == [0, 2]
    else:
        assert any(e.recomputed for e in report.events if e.step not in (0, 2)), "windows new at a cached step match"
    first_block = [event for event in report.events if event.key.block[:2] == ("double_block", 0)]
    assert [event.key.window[0] for event in first_block] == calls, "each call's pairs are filed under its own frames"


def test_every_context_window_gets_the_updates_its_own_frames_stored(pack, monkeypatch):
    """With full steps, each window's merged steps take the updates stored at the full step for the
    frames that window covers, never another window's (they share conds and length)."""
    if missing_classes("wan21"):
        pytest.skip("this ComfyUI host has no Wan")
    model = windowed(tiny_dit("wan21"), "standard_static")
    run_state = pack.ca_tome.comfyui.run.RunState
    log = []  # ("kept" or "read", (block, the window's frames), the update) in call order
    keep, stored = run_state.keep_update, run_state.stored_update

    def keeping(self, block, options, update, grid):
        log.append(("kept", (block, tuple(options["context_window"].index_list)), update.clone()))
        return keep(self, block, options, update, grid)

    def reading(self, block, options, x, grid):
        update = stored(self, block, options, x, grid)
        log.append(("read", (block, tuple(options["context_window"].index_list)), update))
        return update

    monkeypatch.setattr(run_state, "keep_update", keeping)
    monkeypatch.setattr(run_state, "stored_update", reading)
    patched = pack.nodes.CATomeModelDefault.execute(model, "custom", 0.0, "all", "", "auto", 2, "qkv", "min",
                                                    full_every=2).result[0]
    sample_dit(patched, "wan21", Sampling(steps=STEPS, cfg=1.0), frames=FRAMES)
    latest = {}
    for kind, key, update in log:
        if kind == "kept":
            latest[key] = update
        else:
            assert update is not None and torch.equal(update, latest[key]), f"{key} reads what its own frames stored"
    assert len({window for _, (_, window), _ in log}) == 3 and sum(kind == "read" for kind, _, _ in log) > 0
