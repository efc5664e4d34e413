import numpy as np
import pytest
import torch

from adkd.pipelines.data.synthetic_defects import perlin_noise, with_synthetic_defects


def _normal(n: int = 6, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(60, 200, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_each_image_once_clean_once_defective_with_exact_masks():
    normal = _normal()
    out = with_synthetic_defects(normal, seed=3)
    n = len(normal)
    assert out.images.shape == (2 * n, 3, 64, 64) and out.images.dtype == torch.uint8
    assert out.labels.tolist() == [0] * n + [1] * n
    assert torch.equal(out.images[:n], normal)
    assert out.masks[:n].sum() == 0
    changed = (out.images[n:] != normal).any(dim=1, keepdim=True).to(torch.uint8)
    assert torch.equal(changed, out.masks[n:]), "masks must mark exactly the changed pixels"
    area = out.masks[n:].float().mean(dim=(1, 2, 3))
    assert (area > 0.001).all() and (area < 0.35).all()
    assert set(out.kinds[n:]) == {"cut_paste", "perlin_blend"}


def test_deterministic_per_seed_and_different_across_seeds():
    normal = _normal()
    a, b, c = (with_synthetic_defects(normal, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert noise.shape == (64, 64)
    assert np.abs(noise).max() <= 1.5
    # neighbouring pixels differ far less than the overall spread: it is noise with structure
    assert np.abs(np.diff(noise, axis=1)).mean() < 0.3 * noise.std()  # white noise gives ~1.1 std
    assert noise.std() > 0.1


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        with_synthetic_defects(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="no normal images"):
        with_synthetic_defects(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))
