"""ECAPA-TDNN blocks: shapes, the invariances each block promises, and the parameter budget."""

from __future__ import annotations

import pytest
import torch

from voiceid.ecapa.model import (
    ECAPATDNN,
    AttentiveStatsPool,
    Conv1dReluBn,
    EcapaConfig,
    Res2NetBlock,
    SEBlock,
    SERes2NetBlock,
    count_parameters,
)

SMALL = EcapaConfig(n_mels=40, channels=64, scale=4, se_channels=16, attention_channels=16, embedding_dim=24)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)



def test_one_second_and_thirty_second_clips_embed_to_the_same_shape() -> None:
    model = ECAPATDNN(EcapaConfig(channels=64, embedding_dim=32)).eval()  # 80 bands, 10 ms hop
    with torch.no_grad():
        short = model(torch.randn(1, 100, 80))  # 1 s
        long = model(torch.randn(1, 3000, 80))  # 30 s
    assert short.shape == long.shape == (1, 32)
    assert torch.isfinite(long).all()


def test_paper_sized_model_has_about_6_2m_parameters() -> None:
    assert 6.0e6 < count_parameters(ECAPATDNN(EcapaConfig(channels=512))) < 6.4e6
    # Parameters grow roughly with C^2: the small CPU preset is far cheaper.
    assert count_parameters(ECAPATDNN(EcapaConfig(channels=128))) < 1.0e6


@pytest.mark.parametrize(
    ("block", "in_ch", "out_ch"),
    [
        (Conv1dReluBn(40, 64, kernel_size=5, dilation=1), 40, 64),
        (Res2NetBlock(64, scale=4, kernel_size=3, dilation=3), 64, 64),
        (SEBlock(64, bottleneck=16), 64, 64),
        (SERes2NetBlock(64, scale=4, se_channels=16, kernel_size=3, dilation=4), 64, 64),
        (AttentiveStatsPool(64, attention_channels=16), 64, None),
    ],
)
@pytest.mark.parametrize("n_frames", [1, 7, 50])
def test_block_shapes(block: torch.nn.Module, in_ch: int, out_ch: int | None, n_frames: int) -> None:
    out = block.eval()(torch.randn(3, in_ch, n_frames))
    expected = (3, out_ch, n_frames) if out_ch is not None else (3, 2 * in_ch)
    assert out.shape == expected


def test_res2net_first_group_passes_through() -> None:
    x = torch.randn(2, 64, 20)
    out = Res2NetBlock(64, scale=4, kernel_size=3, dilation=2)(x)
    assert torch.equal(out[:, :16], x[:, :16])
    assert not torch.allclose(out[:, 16:32], x[:, 16:32])


def test_se_gate_only_shrinks_channels() -> None:
    x = torch.randn(2, 64, 20)
    out = SEBlock(64, 16)(x)
    ratio = out / x  # one gate in (0, 1) per (batch, channel), constant over time
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :, :1].expand_as(ratio), atol=1e-5)


def test_attentive_pooling_ignores_frame_order() -> None:
    pool = AttentiveStatsPool(32, attention_channels=8).eval()
    x = torch.randn(2, 32, 40)
    with torch.no_grad():
        assert torch.allclose(pool(x), pool(x[:, :, torch.randperm(40)]), atol=1e-5)


def test_attentive_pooling_with_flat_attention_is_mean_and_std() -> None:
    pool = AttentiveStatsPool(32, attention_channels=8, global_context=False).eval()
    torch.nn.init.zeros_(pool.attention.weight)
    torch.nn.init.zeros_(pool.attention.bias)
    x = torch.randn(2, 32, 40)
    with torch.no_grad():
        out = pool(x)
    torch.testing.assert_close(out[:, :32], x.mean(dim=2))
    torch.testing.assert_close(out[:, 32:], x.std(dim=2, unbiased=False), atol=1e-4, rtol=1e-4)


def test_mean_normalisation_makes_embeddings_level_invariant() -> None:
    x = torch.randn(2, 60, 40)
    offset = torch.randn(1, 1, 40) * 10  # a fixed per-band gain (level, channel colouring)
    with torch.no_grad():
        model = ECAPATDNN(SMALL).eval()
        torch.testing.assert_close(model(x), model(x + offset), atol=1e-4, rtol=1e-4)
        raw = ECAPATDNN(EcapaConfig(**{**SMALL.to_dict(), "cmn": False})).eval()
        assert not torch.allclose(raw(x), raw(x + offset), atol=1e-3)


def test_model_is_differentiable_end_to_end() -> None:
    model = ECAPATDNN(SMALL)
    model(torch.randn(4, 30, 40)).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_shapes_are_rejected_with_the_expected_layout() -> None:
    with pytest.raises(ValueError, match=r"\(batch, frames, 40\)"):
        ECAPATDNN(SMALL)(torch.randn(2, 40, 30))  # channels-first by mistake
    with pytest.raises(ValueError, match="divisible by scale"):
        ECAPATDNN(EcapaConfig(channels=100, scale=8))
    with pytest.raises(ValueError, match="embedding_dim"):
        EcapaConfig(embedding_dim=0).check()
