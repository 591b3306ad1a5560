"""ECAPA-TDNN speaker embedder (Desplanques et al., 2020), written to be read top to bottom.

The network maps a log-mel spectrogram of any length to one fixed-size speaker embedding:

    (B, T, n_mels) -> per-band mean removal (CMN)                     -> (B, T, n_mels)
                   -> Conv1dReluBn(k=5)                               -> (B, C, T)
                   -> 3 x SERes2NetBlock(k=3, dilation 2, 3, 4)       -> 3 x (B, C, T)
                   -> multi-layer feature aggregation (concat, 1x1)   -> (B, 3C, T)
                   -> AttentiveStatsPool (weighted mean and std)      -> (B, 6C)
                   -> BatchNorm + Linear                              -> (B, embedding_dim)

Time is only ever pooled at the very end, so a 1 s clip and a 30 s clip give embeddings of the
same shape.  The published model uses C=512 (about 6.2 M parameters); a smaller ``channels``
keeps CPU training cheap.  The training objective (AAM-softmax) lives with the training loop in
:mod:`voiceid.ecapa.train`; this file holds only the network.

Example:
    >>> import torch
    >>> model = ECAPATDNN(EcapaConfig(n_mels=40, channels=64, embedding_dim=32))
    >>> model(torch.randn(2, 150, 40)).shape
    torch.Size([2, 32])
    >>> count_parameters(ECAPATDNN(EcapaConfig(channels=512)))
    6194048
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EcapaConfig:
    """Shape of the network.

    Attributes:
        n_mels: input feature bands (the log-mel ``n_mels``).
        channels: width C of the frame-level layers (512 in the paper, 1024 for the large model).
        scale: Res2Net scale, the number of channel groups with their own hierarchical conv.
        se_channels: bottleneck width of the squeeze-excitation gate.
        attention_channels: hidden width of the attentive statistics pooling.
        embedding_dim: size of the speaker embedding (192 in the paper).
        global_context: let the pooling attention see the utterance-level mean and std too.
        cmn: subtract each band's mean over time first (cepstral mean normalisation), so the
            embedding ignores recording level and fixed channel colouring, and the logged model
            takes raw log-mel frames.
    """

    n_mels: int = 80
    channels: int = 512
    scale: int = 8
    se_channels: int = 128
    attention_channels: int = 128
    embedding_dim: int = 192
    global_context: bool = True
    cmn: bool = True

    def check(self) -> None:
        """Reject shapes the blocks cannot build (called by :func:`voiceid.config.from_mapping`)."""
        for name in ("n_mels", "channels", "scale", "se_channels", "attention_channels", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.channels % self.scale:
            raise ValueError(f"channels ({self.channels}) must be divisible by scale ({self.scale})")

    def to_dict(self) -> dict[str, int | bool]:
        """Plain dict, for checkpoints and logged params."""
        return asdict(self)


class Conv1dReluBn(nn.Module):
    """The TDNN layer: dilated 1-D convolution over time, ReLU, batch norm.

    Zero "same" padding keeps the number of frames, so any input length >= 1 works.

    Example:
        >>> Conv1dReluBn(80, 64, kernel_size=5)(torch.randn(2, 80, 30)).shape
        torch.Size([2, 64, 30])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.relu(self.conv(x)))  # (B, C_in, T) -> (B, C_out, T)


class Res2NetBlock(nn.Module):
    """Res2Net: split channels into ``scale`` groups; group i sees group i-1's output too.

    The first group passes through untouched, so the block mixes receptive fields of
    1, 1, 2, 3, ... convolutions within one layer at the cost of a single conv's parameters.

    Example:
        >>> Res2NetBlock(64, scale=8, kernel_size=3, dilation=2)(torch.randn(2, 64, 30)).shape
        torch.Size([2, 64, 30])
    """

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(Conv1dReluBn(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)  # scale x (B, C/scale, T)
        out = [chunks[0]]
        y = chunks[0]
        for i, block in enumerate(self.blocks, start=1):
            y = block(chunks[i] if i == 1 else chunks[i] + y)
            out.append(y)
        return torch.cat(out, dim=1)  # (B, C, T)


class SEBlock(nn.Module):
    """Squeeze-excitation: rescale each channel by a gate computed from its time average.

    Example:
        >>> SEBlock(64, bottleneck=16)(torch.randn(2, 64, 30)).shape
        torch.Size([2, 64, 30])
    """

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(channels, bottleneck, kernel_size=1)
        self.excite = nn.Conv1d(bottleneck, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)  # (B, C, 1)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(s))))  # (B, C, 1)
        return x * gate  # (B, C, T)


class SERes2NetBlock(nn.Module):
    """1x1 conv -> Res2Net -> 1x1 conv -> squeeze-excitation, plus a residual connection.

    Example:
        >>> SERes2NetBlock(64, scale=8, se_channels=16, kernel_size=3, dilation=3)(torch.randn(2, 64, 30)).shape
        torch.Size([2, 64, 30])
    """

    def __init__(self, channels: int, scale: int, se_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = Conv1dReluBn(channels, channels, kernel_size=1)
        self.res2net = Res2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = Conv1dReluBn(channels, channels, kernel_size=1)
        self.se = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.tdnn2(self.res2net(self.tdnn1(x))))  # (B, C, T)
        return x + y


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time, per channel.

    Each channel gets its own softmax over frames, so the pooling can listen to the frames that
    carry speaker information for that channel (vowels, say) and ignore pauses.  With
    ``global_context`` the attention also sees the plain utterance mean and std.

    Example:
        >>> AttentiveStatsPool(64, attention_channels=16)(torch.randn(2, 64, 30)).shape
        torch.Size([2, 128])
    """

    def __init__(self, channels: int, attention_channels: int, global_context: bool = True) -> None:
        super().__init__()
        self.global_context = global_context
        in_channels = channels * 3 if global_context else channels
        self.tdnn = Conv1dReluBn(in_channels, attention_channels, kernel_size=1)
        self.attention = nn.Conv1d(attention_channels, channels, kernel_size=1)

    @staticmethod
    def _stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (w * x).sum(dim=2)  # (B, C)
        var = (w * x.pow(2)).sum(dim=2) - mean.pow(2)
        # The clamp keeps sqrt's gradient finite on constant channels.
        return mean, var.clamp(min=1e-6).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = x.shape[2]
        if self.global_context:
            uniform = torch.full_like(x[:, :1, :], 1.0 / n_frames)  # (B, 1, T)
            mean, std = self._stats(x, uniform)  # (B, C) each
            context = [mean.unsqueeze(2).expand(-1, -1, n_frames), std.unsqueeze(2).expand(-1, -1, n_frames)]
            attn_in = torch.cat([x, *context], dim=1)  # (B, 3C, T)
        else:
            attn_in = x
        scores = self.attention(torch.tanh(self.tdnn(attn_in)))  # (B, C, T)
        w = torch.softmax(scores, dim=2)
        mean, std = self._stats(x, w)
        return torch.cat([mean, std], dim=1)  # (B, 2C)


class ECAPATDNN(nn.Module):
    """The full embedder: (B, T, n_mels) log-mel frames -> (B, embedding_dim) speaker embeddings.

    Example:
        >>> cfg = EcapaConfig(n_mels=40, channels=64, scale=4, embedding_dim=16)
        >>> model = ECAPATDNN(cfg).eval()
        >>> short, long = model(torch.randn(1, 100, 40)), model(torch.randn(1, 3000, 40))
        >>> short.shape == long.shape == (1, 16)
        True
    """

    def __init__(self, config: EcapaConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        c = config.channels
        self.layer1 = Conv1dReluBn(config.n_mels, c, kernel_size=5)
        self.blocks = nn.ModuleList(
            SERes2NetBlock(c, config.scale, config.se_channels, kernel_size=3, dilation=d) for d in (2, 3, 4)
        )
        # Multi-layer feature aggregation: the pooled representation sees all three blocks,
        # shallow (more phonetic) and deep (more speaker-specific) alike.
        self.mfa = Conv1dReluBn(3 * c, 3 * c, kernel_size=1)
        self.pool = AttentiveStatsPool(3 * c, config.attention_channels, config.global_context)
        self.pool_bn = nn.BatchNorm1d(6 * c)
        self.embed = nn.Linear(6 * c, config.embedding_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embed a batch of equal-length log-mel sequences, shape (B, T, n_mels)."""
        if feats.dim() != 3 or feats.shape[2] != self.config.n_mels:
            raise ValueError(f"expected (batch, frames, {self.config.n_mels}) features, found {tuple(feats.shape)}")
        if self.config.cmn:
            feats = feats - feats.mean(dim=1, keepdim=True)  # (B, T, n_mels)
        x = self.layer1(feats.transpose(1, 2))  # (B, C, T)
        outs = []
        for block in self.blocks:
            x = block(x)  # (B, C, T)
            outs.append(x)
        x = self.mfa(torch.cat(outs, dim=1))  # (B, 3C, T)
        x = self.pool_bn(self.pool(x))  # (B, 6C)
        return self.embed(x)  # (B, embedding_dim)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (what the paper quotes as model size)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
