"""The pixel "latent" the trained models see: exactly invertible, unit-spread, the family's shape."""

import pytest
import torch

from devkit.training import PHOTOS, PixelCodec, clips, crops, photographs, stalled


@pytest.mark.parametrize("channels, block", [(4, 1), (16, 2)])
def test_codec_round_trip_and_shape(channels, block):
    codec = PixelCodec(channels)
    rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    latent = codec.encode(rgb)
    assert codec.block == block
    assert latent.shape == (2, channels, 32 // block, 32 // block)
    assert torch.allclose(codec.decode(latent), rgb, atol=1e-5)


def test_crops_are_real_photograph_patches():
    images = photographs()
    pixels, labels = crops(images, 32, 8, torch.Generator().manual_seed(0))
    assert pixels.shape == (8, 3, 32, 32) and 0 <= pixels.min() and pixels.max() <= 1
    assert labels.max() < len(images)
    assert pixels.flatten(1).std(1).min() > 0  # photographs, not flat fills


def test_training_stops_when_the_loss_stalls():
    falling = [{"loss": 1.0 / (1 + i)} for i in range(16)]
    flat = [{"loss": 0.5} for _ in range(16)]
    assert not stalled(falling)
    assert stalled(flat)
    assert not stalled(flat[:15])  # too few logs to tell


def test_codec_encodes_and_decodes_a_video_frame_by_frame():
    codec = PixelCodec(16)
    video = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    latent = codec.encode(video)
    assert latent.shape == (2, 16, 5, 16, 16)
    assert torch.allclose(latent[:, :, 3], codec.encode(video[:, :, 3]))
    assert torch.allclose(codec.decode(latent), video, atol=1e-5)


def test_clips_move_over_real_photographs_so_adjacent_frames_are_alike():
    pixels, labels = clips(photographs(), 32, 5, 12, torch.Generator().manual_seed(0))
    assert pixels.shape == (12, 3, 5, 32, 32) and 0 <= pixels.min() and pixels.max() <= 1
    assert labels.max() < len(PHOTOS)
    adjacent = (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean()
    other_clip = (pixels[1:] - pixels[:-1]).abs().mean()
    assert adjacent < 0.5 * other_clip, (adjacent, other_clip)
    moving = (pixels[:, :, 1:] - pixels[:, :, :-1]).flatten(1).abs().amax(1) > 0
    assert moving.sum() >= len(moving) // 2, moving  # mostly pans and moving crops, not frozen copies


def test_a_codec_with_a_latent_format_speaks_the_samplers_latents():
    class Scaled:  # as ComfyUI's SD1.5 latent format
        def process_in(self, latent):
            return latent * 0.18215

        def process_out(self, latent):
            return latent / 0.18215

    plain, sampler = PixelCodec(4), PixelCodec(4, Scaled())
    rgb = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sampler.encode(rgb), plain.encode(rgb) / 0.18215)
    assert torch.allclose(sampler.decode(sampler.encode(rgb)), rgb, atol=1e-5)
