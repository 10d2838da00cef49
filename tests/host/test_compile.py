"""torch.compile with CA-ToMe: the host's own TorchCompileModel node (inductor, on the CPU) before and
after the node, and a per-block compile of a DiT's blocks (the way KJNodes compiles them).

What can go wrong under compile, and what each test would see:
- state read inside the compiled region is frozen at its first traced value (the core node drops
  dynamo's guards on ``transformer_options``, where the run lives): the pairs of later checkpoint
  steps would never be recomputed — every step's merge events and denoised latent are compared
  with the eager run's, checkpoint steps and cached steps alike;
- code compiled for the unpatched model serving the patched one (ComfyUI 0.33's guard filter):
  the unpatched model is compiled and sampled first, then the patched ones must still merge;
- a new sequence length at every recomputation: recompiles until dynamo's limit, then eager.
"""

import logging

import pytest
import torch

from devkit.dit_models import missing_classes, sample_dit, tiny_dit
from devkit.sampling import Sampling, sample

SCHEDULE = "0, 3, 6"  # custom steps of an 8-step run: checkpoints 0, 3, 6; every other step cached
STEPS = 8
THRESHOLD = {"unet": 0.5, "flux": 0.3, "zimage": 0.3, "krea2": 0.4}  # these random models merge a fair share, not everything
# Relative L2 of compiled against eager: inductor fuses and reorders float32 arithmetic (seen here:
# 2e-6 on the UNet, 1e-5 on Flux), while a merge that differs changes the latent by percents.
TOLERANCE = 1e-4


@pytest.fixture
def fresh_dynamo():
    """Each test compiles from scratch and leaves nothing compiled behind."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def model_of(kind):
    from devkit.sampling import tiny_model

    if kind != "unet" and missing_classes(kind):
        pytest.skip(f"this ComfyUI host has no {', '.join(missing_classes(kind))}")
    return tiny_model("sd15") if kind == "unet" else tiny_dit(kind)


def flux_blocks(model) -> list[str]:
    """Every block of a Flux model, as keys for a per-block compile."""
    diffusion_model = model.get_model_object("diffusion_model")
    return [f"diffusion_model.{kind}.{index}" for kind in ("double_blocks", "single_blocks")
            for index in range(len(getattr(diffusion_model, kind)))]


def traced_run(kind, model, seed=0):
    """Every step's denoised latent (x0) of one real sampling run."""
    denoised = []
    run = Sampling(steps=STEPS, size=(16, 16), seed=seed, callback=lambda step, x0, x, total: denoised.append(x0.clone()))
    if kind == "unet":
        sample(model, run)
    else:
        sample_dit(model, kind, run)
    return denoised


def ca_tome(pack, model, kind, **inputs):
    return pack.nodes.CATome.execute(model, THRESHOLD[kind], "custom", SCHEDULE, "auto", 2, "qkv", "min",
                                     **inputs).result[0]


def events(pack, model):
    report = pack.ca_tome.comfyui.last_report(model)
    return [(e.step, e.recomputed, e.merged) for e in report.events] if report else []


def assert_like_eager(steps, eager_steps, what):
    assert len(steps) == len(eager_steps) == STEPS
    for step, (x0, expected) in enumerate(zip(steps, eager_steps)):
        error = float((x0 - expected).norm() / expected.norm())
        assert error < TOLERANCE, f"{what}: step {step}'s denoised latent is {error:.1e} from eager"


@pytest.mark.parametrize("kind", ["unet", "flux", "zimage", "krea2"])  # Z-Image, Krea 2: object-patched forwards
def test_compiled_before_or_after_the_node_merges_as_eager_at_every_step(pack, fresh_dynamo, kind):
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    def compiled(model):
        return TorchCompileModel.execute(model, "inductor").result[0]

    model = model_of(kind)
    plain = traced_run(kind, model)
    eager_model = ca_tome(pack, model, kind)
    eager = traced_run(kind, eager_model)
    eager_events = events(pack, eager_model)
    assert {step for step, recomputed, _ in eager_events if recomputed} == {0, 3, 6}
    assert len({merged for *_, merged in eager_events}) > 2, "the merged count changes at the checkpoints"
    assert float((eager[-1] - plain[-1]).norm() / plain[-1].norm()) > 100 * TOLERANCE, "merging changes the output"

    compiled_plain = compiled(model)  # compiled and run first: its code must not serve the patched models
    assert_like_eager(traced_run(kind, compiled_plain), plain, "compiled, unpatched")
    for order, patched in (("compile, then CA-ToMe", ca_tome(pack, compiled_plain, kind)),
                           ("CA-ToMe, then compile", compiled(ca_tome(pack, model, kind)))):
        steps = traced_run(kind, patched)
        assert events(pack, patched) == eager_events, f"{order}: the same pairs recomputed and merged at every step"
        assert_like_eager(steps, eager, order)
    assert fresh_dynamo["frames"]["ok"] > 0, "dynamo compiled the model"
    assert_like_eager(traced_run(kind, compiled_plain), plain, "compiled, unpatched, after the patched runs")
    # Another seed merges other counts: the core node's dynamic shapes made the length symbolic at
    # the first change, so nothing compiles again.
    frames = fresh_dynamo["frames"]["total"]
    traced_run(kind, patched, seed=1)
    assert {merged for *_, merged in events(pack, patched)} - {merged for *_, merged in eager_events}, "new counts"
    assert fresh_dynamo["frames"]["total"] == frames, "no recompilation for the new merged counts"


def test_cached_steps_of_a_compiled_unet_run_as_one_graph(pack, fresh_dynamo, monkeypatch):
    """Between checkpoints the UNet call brings its plans, so no block asks the run for one (the
    graph break, since matching cannot be traced): only checkpoint steps do. The first cached step
    compiles without a break, and cached steps after later checkpoints (other merged counts)
    compile nothing more."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    run_state = pack.ca_tome.comfyui.run.RunState
    asked_at, ask = set(), run_state.plan

    def spy(run, *args, **kwargs):
        asked_at.add(run.step)
        return ask(run, *args, **kwargs)

    monkeypatch.setattr(run_state, "plan", spy)
    compiled = TorchCompileModel.execute(ca_tome(pack, model_of("unet"), "unet"), "inductor").result[0]
    after_step = []  # (frames compiled, graph breaks compiled) when each step finished

    def count(step, *_):
        after_step.append((fresh_dynamo["frames"].get("total", 0), sum(fresh_dynamo["graph_break"].values())))

    sample(compiled, Sampling(steps=STEPS, size=(16, 16), seed=0, callback=count))
    assert asked_at == {0, 3, 6}, f"blocks asked the run for plans at steps {sorted(asked_at)}"
    during = [tuple(b - a for a, b in zip(before, after)) for before, after in zip(after_step, after_step[1:])]
    assert during[0][1] == 0, f"the first cached step compiled {during[0][1]} graph breaks"
    later_cached = [during[step - 1] for step in range(2, STEPS) if step not in (3, 6)]
    assert all(frames == 0 for frames, _ in later_cached), f"cached steps recompiled: {later_cached}"
    merged = {merged for step, recomputed, merged in events(pack, compiled) if not recomputed}
    assert len(merged) > 5, "cached steps after the later checkpoints merge other counts"


def test_per_block_compile_of_a_dit_merges_as_eager(pack, fresh_dynamo):
    """KJNodes-style: every block of the DiT compiled on its own; CA-ToMe's block replacement calls
    the compiled block on the merged tokens."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    model = model_of("flux")
    eager_model = ca_tome(pack, model, "flux")
    eager = traced_run("flux", eager_model)
    blocks = flux_blocks(model)
    for order in ("compile, then CA-ToMe", "CA-ToMe, then compile"):
        patched = ca_tome(pack, model, "flux") if order.startswith("CA") else model.clone()
        set_torch_compile_wrapper(patched, backend="inductor", keys=blocks)
        patched = ca_tome(pack, patched, "flux") if order.startswith("compile") else patched
        steps = traced_run("flux", patched)
        assert events(pack, patched) == events(pack, eager_model), order
        assert_like_eager(steps, eager, order)
    assert fresh_dynamo["frames"]["ok"] > 0, "dynamo compiled the blocks"


class RecompileLimitHits(logging.Handler):
    """Counts dynamo's "hit config.recompile_limit" warnings: past it a frame runs eagerly."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.hits = 0

    def emit(self, record):
        self.hits += "recompile_limit" in record.getMessage()


BUCKETS = 4


def test_count_buckets_keep_a_static_shape_compile_under_the_recompile_limit(pack, fresh_dynamo):
    """Per-block compile with dynamic shapes off (KJNodes' default): every merged length the blocks
    meet is a compilation. Exact counts meet a new one at almost every recomputation and run into
    dynamo's recompile limit (then those frames run eagerly); ``count_buckets`` keeps them to a few.
    Recompiles are dynamo's (its shape guards), whatever the backend: dynamo's ``eager`` backend
    counts them as inductor would, without inductor's minutes of code generation per length."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    model = model_of("flux")
    blocks = flux_blocks(model)
    watcher = RecompileLimitHits()
    logging.getLogger("torch._dynamo").addHandler(watcher)

    def compiled_runs(count_buckets):
        torch._dynamo.reset()
        watcher.hits = 0
        patched = model.clone()
        set_torch_compile_wrapper(patched, backend="eager", dynamic=False, keys=blocks)
        patched = ca_tome(pack, patched, "flux", count_buckets=count_buckets)
        lengths = set()
        for seed in range(3):
            traced_run("flux", patched, seed)
            lengths |= {merged for *_, merged in events(pack, patched)}
        return lengths, watcher.hits

    try:
        exact_lengths, exact_hits = compiled_runs(0)
        bucket_lengths, bucket_hits = compiled_runs(BUCKETS)
    finally:
        logging.getLogger("torch._dynamo").removeHandler(watcher)
    assert len(exact_lengths) > torch._dynamo.config.recompile_limit and exact_hits > 0, (exact_lengths, exact_hits)
    assert len(bucket_lengths) <= BUCKETS + 1 and bucket_hits == 0, (bucket_lengths, bucket_hits)
