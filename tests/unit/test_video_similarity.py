"""Video tokens: what real video DiTs carry per latent frame must not decide what merges.

Real Wan carries massive activations on every video token, largest on the first latent frame
(arXiv 2603.17825), and its attention sinks sit on first-frame patches; random weights show
neither, so they are injected here."""

import torch

from ca_tome import metric, plan_merge
from ca_tome.comfyui.run import TokenMerging
from ca_tome.schedule import Schedule

FRAMES, HEIGHT, WIDTH, CHANNELS = 5, 16, 24, 64
FRAME = HEIGHT * WIDTH


def video_tokens(seed=0) -> torch.Tensor:
    """[1, F·H·W, C]: content smooth over a few tokens, plus fine detail."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, CHANNELS, FRAMES, HEIGHT // 4, WIDTH // 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(FRAMES, HEIGHT, WIDTH), mode="trilinear")
    video = smooth + 1.5 * torch.randn(1, CHANNELS, FRAMES, HEIGHT, WIDTH, generator=g)
    return video.permute(0, 2, 3, 4, 1).reshape(1, FRAMES * FRAME, CHANNELS)


def with_first_frame_massive(tokens: torch.Tensor) -> torch.Tensor:
    massive = tokens.clone()
    massive[..., :4] += 30.0  # every token
    massive[:, :FRAME, :4] += 60.0  # the first latent frame's far larger
    return massive


def merged_per_frame(similarity: torch.Tensor, threshold: float) -> list[float]:
    plan = plan_merge(similarity, HEIGHT, WIDTH, threshold=threshold, frames=FRAMES)
    return (torch.bincount(plan.merged_src[0] // FRAME, minlength=FRAMES).float() / FRAME).tolist()


def test_a_frames_own_massive_activations_do_not_make_its_tokens_look_alike():
    plain, massive = video_tokens(), with_first_frame_massive(video_tokens())
    for threshold in (0.5, 0.4):
        expected = merged_per_frame(metric.DIT(plain, FRAMES), threshold)
        per_frame = merged_per_frame(metric.DIT(massive, FRAMES), threshold)
        assert max(abs(a - b) for a, b in zip(per_frame, expected)) <= 0.01, (per_frame, expected)
        # Standardised over the whole clip, the first frame's offset makes its tokens alike.
        clip_wide = merged_per_frame(metric.DIT(massive), threshold)
        assert clip_wide[0] > expected[0] + 0.2, (clip_wide, expected)


def test_a_videos_first_frame_merges_only_within_itself():
    similarity = metric.DIT(video_tokens(), FRAMES)
    for cells in ("spatial", "spatio-temporal"):
        for search in ("neighbourhood", "global"):
            config = TokenMerging(Schedule.preset("all"), threshold=0.4, video_cells=cells, video_search=search)
            plan = config.plan(similarity, (FRAMES, HEIGHT, WIDTH))
            src_first, dst_first = plan.merged_src[0] < FRAME, plan.merged_dst[0] < FRAME
            assert torch.equal(src_first, dst_first), f"a pair crosses the first frame ({cells}, {search})"
            assert src_first.any() and (~src_first).any(), f"both sides still merge ({cells}, {search})"
    image = TokenMerging(Schedule.preset("all"), threshold=0.4).plan(similarity[:, :FRAME], (HEIGHT, WIDTH))
    assert torch.equal(image.merged_src, plan_merge(similarity[:, :FRAME], HEIGHT, WIDTH, threshold=0.4).merged_src)
