"""Classic, weight-free encoders: hand-crafted features that carry real signal without any download.

They make the offline demo and the tests meaningful next to the bundled MiniLM text encoder: two red
dresses are closer than a red and a blue one, a 440 Hz tone is far from an 880 Hz one, a static shot is far
from a panning one. They are deterministic, need no weights (identity ``none:classic-v1``, which is *not*
random initialisation) and follow the :class:`~mmrec.encoders.base.FrozenEncoder` contract.

Registered (all also ``tiny=True``: they are already tiny):

- ``classic/color-histogram`` (image, D=201): joint RGB and HSV histograms, 2x2 spatial colour moments and
  gradient-orientation (texture / pattern) histograms of the image resized to 64x64;
- ``classic/log-mel`` (audio, D=131): mean and std over time of 64 log-mel bands (16 kHz), loudness and the
  spectral centroid's mean and std;
- ``classic/video-stats`` (video, D=91): mean colour histogram of 16 uniformly sampled frames, the
  frame-difference motion-energy profile, and a coarse motion-direction cue from normal flow (brightness
  constancy, no optical-flow solver).

Example:
    >>> from PIL import Image
    >>> from mmrec.encoders import create_encoder
    >>> enc = create_encoder("classic/color-histogram")
    >>> enc.encode_raw([Image.new("RGB", (32, 32), "red")]).shape
    torch.Size([1, 201])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmrec.encoders import ENCODERS
from mmrec.encoders.base import AudioClip, FrozenEncoder, VideoClip
from mmrec.encoders.media import (
    MediaError,
    load_audio,
    load_image,
    load_video,
    resample_audio,
    sample_frame_indices,
)

CLASSIC_WEIGHTS = "none:classic-v1"
"""Weights identity of every classic encoder: no weights at all (not random initialisation)."""

__all__ = ["CLASSIC_WEIGHTS", "ColorHistogramEncoder", "LogMelEncoder", "VideoStatsEncoder"]


def _check_weights(weights: str | None) -> None:
    if weights not in (None, "none", "random", CLASSIC_WEIGHTS):
        raise ValueError(
            f"classic encoders have no weights, got weights={weights!r}; leave weights unset (or 'none')."
        )


def _sobel_kernels() -> torch.Tensor:
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    return torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy


def _gray(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] -> ``(..., H, W)`` luma."""
    return 0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]


def _joint_hist(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """``(N, P)`` integer codes -> ``(N, bins)`` normalised histograms."""
    hist = torch.zeros(codes.shape[0], bins, dtype=torch.float32, device=codes.device)
    hist.scatter_add_(1, codes, torch.ones_like(codes, dtype=torch.float32))
    return hist / codes.shape[1]


def _rgb_codes(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N, H*W)`` joint RGB bin codes in ``[0, levels**3)``."""
    q = (x * levels).long().clamp_(0, levels - 1)
    return (q[:, 0] * levels * levels + q[:, 1] * levels + q[:, 2]).flatten(1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> HSV with every channel in [0, 1]."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(dim=1)
    c = v - x.min(dim=1).values
    s = torch.where(v > 0, c / v.clamp_min(1e-8), torch.zeros_like(v))
    cs = c.clamp_min(1e-8)
    h = torch.where(v == r, ((g - b) / cs) % 6, torch.where(v == g, (b - r) / cs + 2, (r - g) / cs + 4))
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, v], dim=1)


# ------------------------------------------------------------------------------------------------- image
class ColorHistogramEncoder(FrozenEncoder):
    """Colour and texture statistics of an image (no weights).

    The image is resized to ``size x size`` (bilinear) and described by, in order (D = 201):

    - joint RGB histogram, 4x4x4 bins (64);
    - joint HSV histogram, 8 hue x 3 saturation x 3 value bins (72);
    - colour moments (mean and std of R, G, B) in each cell of a 2x2 grid (24);
    - gradient-orientation histograms (Sobel on luma, 8 unsigned orientation bins weighted by gradient
      magnitude) of the whole image and of each 2x2 cell (40) — texture and pattern;
    - edge density: the mean gradient magnitude (1).

    Histograms are square-rooted (Hellinger embedding) so Euclidean / cosine distances between outputs
    compare distributions sensibly; each histogram block has unit L2 norm.

    Args:
        size: side of the square working resolution.
        dtype: compute dtype.
        normalize: L2-normalise the outputs.
        weights: must be unset / ``"none"``: there are no weights.

    Example:
        >>> from PIL import Image
        >>> enc = ColorHistogramEncoder()
        >>> v = enc.encode_raw([Image.new("RGB", (10, 10), "red"), Image.new("RGB", (10, 10), "blue")])
        >>> v.shape
        torch.Size([2, 201])
    """

    modality = "image"
    ORIENTATION_BINS = 8

    def __init__(
        self,
        size: int = 64,
        *,
        dtype: str = "float32",
        normalize: bool = False,
        weights: str | None = None,
        name: str = "classic/color-histogram",
    ) -> None:
        _check_weights(weights)
        super().__init__(name=name, weights=CLASSIC_WEIGHTS, dtype=dtype, normalize=normalize)
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        self.size = int(size)
        self.register_buffer("sobel", _sobel_kernels(), persistent=False)
        self.output_dim = 64 + 72 + 24 + 5 * self.ORIENTATION_BINS + 1
        self.freeze()

    def preprocess(self, raw: Image.Image | Any) -> torch.Tensor:
        """An RGB ``PIL.Image`` (or a path / bytes, decoded with :func:`~mmrec.encoders.media.load_image`)
        -> ``(3, size, size)`` float32 in [0, 1]."""
        img = raw if isinstance(raw, Image.Image) else load_image(raw)
        img = img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().clamp(0, 1)  # (B, 3, S, S)
        n = x.shape[0]
        rgb = _joint_hist(_rgb_codes(x), 64).sqrt()
        hsv = _rgb_to_hsv(x)
        hq = (hsv[:, 0] * 8).long().clamp_(0, 7)
        sq = (hsv[:, 1] * 3).long().clamp_(0, 2)
        vq = (hsv[:, 2] * 3).long().clamp_(0, 2)
        hsv_hist = _joint_hist((hq * 9 + sq * 3 + vq).flatten(1), 72).sqrt()
        cells = _grid_cells(x)  # (B, 4, 3, S/2, S/2)
        moments = torch.cat([cells.mean(dim=(-1, -2)), cells.std(dim=(-1, -2))], dim=-1).reshape(n, 24)
        moments = moments / math.sqrt(8.0)  # comparable in scale to a unit-norm histogram block
        grad = F.conv2d(_gray(x).unsqueeze(1), self.sobel.float(), padding=1)  # (B, 2, S, S)
        mag = grad.pow(2).sum(1).sqrt()
        theta = torch.atan2(grad[:, 1], grad[:, 0]) % math.pi
        obin = (theta / math.pi * self.ORIENTATION_BINS).long().clamp_(0, self.ORIENTATION_BINS - 1)
        orient = [_weighted_hist(obin.flatten(1), mag.flatten(1), self.ORIENTATION_BINS)]
        for cell_bins, cell_mag in zip(
            _grid_cells(obin.unsqueeze(1)).unbind(1), _grid_cells(mag.unsqueeze(1)).unbind(1)
        ):
            orient.append(
                _weighted_hist(cell_bins.flatten(1), cell_mag.flatten(1), self.ORIENTATION_BINS) / 2.0
            )
        edge = mag.mean(dim=(1, 2)).unsqueeze(1) * 4.0
        return torch.cat([rgb, hsv_hist, moments, *orient, edge], dim=1)

    def preprocessing_config(self) -> dict[str, Any]:
        return {"size": self.size, "resample": "bilinear", "features": "rgb444+hsv833+moments2x2+hog8x5+edge"}

    def pooling(self) -> str:
        return "histogram"


def _grid_cells(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 4, C, H/2, W/2)``: the cells of a 2x2 grid."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return torch.stack([x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]], dim=1)


def _weighted_hist(codes: torch.Tensor, weights: torch.Tensor, bins: int) -> torch.Tensor:
    """``(N, P)`` codes and weights -> ``(N, bins)`` square-rooted, sum-normalised histograms."""
    hist = torch.zeros(codes.shape[0], bins, dtype=torch.float32, device=codes.device)
    hist.scatter_add_(1, codes, weights.float())
    return (hist / hist.sum(1, keepdim=True).clamp_min(1e-8)).sqrt()


# ------------------------------------------------------------------------------------------------- audio
def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular HTK-mel filterbank ``(n_mels, n_fft // 2 + 1)`` (area-normalised, Slaney style).

    Example:
        >>> mel_filterbank(16000, 512, 64).shape
        (64, 257)
    """
    fmax = sr / 2 if fmax is None else fmax

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


class LogMelEncoder(FrozenEncoder):
    """Log-mel spectrogram statistics of a clip (no weights).

    The clip is mixed to mono, resampled to ``sample_rate`` and cut to ``max_seconds``; a power spectrogram
    (Hann window 25 ms, hop 10 ms, FFT 512) is mapped to ``n_mels`` mel bands and ``log(mel + 1e-6)``.
    Output (D = 2 * n_mels + 3):

    - the mean over time of each log-mel band minus the mean over bands (spectral *shape*, loudness-free);
    - the std over time of each band (temporal variation: stationary tone vs speech vs music);
    - loudness: the mean log-mel value / 10;
    - mean and std of the spectral centroid over time, as a fraction of the Nyquist frequency.

    Features are computed in :meth:`preprocess` (NumPy, in DataLoader workers); :meth:`_encode` stacks them.

    Args:
        sample_rate: working rate in Hz.
        n_mels: number of mel bands.
        max_seconds: only the first ``max_seconds`` are analysed (``None``: all).
        dtype: compute dtype.
        normalize: L2-normalise the outputs.
        weights: must be unset / ``"none"``.

    Example:
        >>> import numpy as np
        >>> from mmrec.encoders.base import AudioClip
        >>> t = np.arange(16000) / 16000
        >>> clip = AudioClip(np.sin(2 * np.pi * 440 * t).astype(np.float32), 16000)
        >>> LogMelEncoder().encode_raw([clip]).shape
        torch.Size([1, 131])
    """

    modality = "audio"
    N_FFT = 512

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        max_seconds: float | None = 60.0,
        *,
        dtype: str = "float32",
        normalize: bool = False,
        weights: str | None = None,
        name: str = "classic/log-mel",
    ) -> None:
        _check_weights(weights)
        super().__init__(name=name, weights=CLASSIC_WEIGHTS, dtype=dtype, normalize=normalize)
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.max_seconds = max_seconds
        self.win_length = round(0.025 * self.sample_rate)
        self.hop_length = round(0.010 * self.sample_rate)
        if self.win_length > self.N_FFT:
            raise ValueError(
                f"sample_rate {sample_rate} too high for a 25 ms window in a {self.N_FFT}-point FFT"
            )
        self._fb = mel_filterbank(self.sample_rate, self.N_FFT, self.n_mels)
        self._window = np.hanning(self.win_length + 2)[1:-1].astype(np.float32)
        self.output_dim = 2 * self.n_mels + 3
        self.freeze()

    def preprocess(self, raw: AudioClip | Any) -> torch.Tensor:
        """An :class:`AudioClip` (or a path / bytes, decoded with :func:`~mmrec.encoders.media.load_audio`)
        -> ``(D,)`` float32 features."""
        clip = raw if isinstance(raw, AudioClip) else load_audio(raw, max_seconds=self.max_seconds)
        wav = np.asarray(clip.waveform, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=0)
        if self.max_seconds is not None:
            wav = wav[: math.ceil(self.max_seconds * clip.sample_rate)]
        if wav.size == 0:
            raise MediaError("empty audio", "the clip has no samples")
        wav = resample_audio(wav, clip.sample_rate, self.sample_rate)
        if wav.size < self.win_length:
            wav = np.pad(wav, (0, self.win_length - wav.size))
        n_frames = 1 + (wav.size - self.win_length) // self.hop_length
        idx = np.arange(self.win_length)[None, :] + self.hop_length * np.arange(n_frames)[:, None]
        spec = np.abs(np.fft.rfft(wav[idx] * self._window, n=self.N_FFT, axis=1)) ** 2  # (T, F)
        logmel = np.log(spec @ self._fb.T + 1e-6)  # (T, n_mels)
        band_mean = logmel.mean(axis=0)
        freqs = np.linspace(0.0, 1.0, spec.shape[1])
        centroid = (spec * freqs).sum(axis=1) / np.maximum(spec.sum(axis=1), 1e-10)
        feats = np.concatenate(
            [
                band_mean - band_mean.mean(),
                logmel.std(axis=0),
                [band_mean.mean() / 10.0, centroid.mean(), centroid.std()],
            ]
        )
        return torch.from_numpy(feats.astype(np.float32))

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def preprocessing_config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "n_fft": self.N_FFT,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "max_seconds": self.max_seconds,
            "mono": "mean",
        }

    def pooling(self) -> str:
        return "mean+std over time"


# ------------------------------------------------------------------------------------------------- video
class VideoStatsEncoder(FrozenEncoder):
    """Colour and motion statistics of a clip (no weights).

    ``num_frames`` frames are sampled uniformly over the clip (by frame index) and resized to
    ``size x size``. Output (D = 64 + (num_frames - 1) + 2 + 8 + 2 = 91 by default):

    - the mean over frames of the square-rooted joint RGB 4x4x4 histogram (64);
    - the motion-energy profile: mean absolute luma difference of consecutive sampled frames, x 10
      (``num_frames - 1``), then its mean and max (2);
    - a motion-direction cue without an optical-flow solver: the normal flow ``-I_t ∇I / |∇I|²`` of every
      pixel (brightness constancy) binned into 8 directions, weighted by ``|I_t|``, scaled by how much
      motion there is (``1 - exp(-10 * mean energy)``) (8); and the least-squares global translation ``(u, v)`` in pixels per sampled frame
      (Lucas-Kanade over the whole frame), clipped to ±3 and divided by 3 (2).

    Args:
        num_frames: frames sampled per clip (``T``).
        size: side of the square working resolution.
        dtype: compute dtype.
        normalize: L2-normalise the outputs.
        weights: must be unset / ``"none"``.

    Example:
        >>> import numpy as np
        >>> from mmrec.encoders.base import VideoClip
        >>> clip = VideoClip(np.zeros((20, 24, 24, 3), np.uint8), fps=10.0)
        >>> VideoStatsEncoder().encode_raw([clip]).shape
        torch.Size([1, 91])
    """

    modality = "video"
    DIRECTION_BINS = 8

    def __init__(
        self,
        num_frames: int = 16,
        size: int = 32,
        *,
        dtype: str = "float32",
        normalize: bool = False,
        weights: str | None = None,
        name: str = "classic/video-stats",
    ) -> None:
        _check_weights(weights)
        super().__init__(name=name, weights=CLASSIC_WEIGHTS, dtype=dtype, normalize=normalize)
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (motion needs two frames), got {num_frames}")
        self.num_frames = int(num_frames)
        self.size = int(size)
        self.register_buffer("sobel", _sobel_kernels(), persistent=False)
        self.output_dim = 64 + (self.num_frames - 1) + 2 + self.DIRECTION_BINS + 2
        self.freeze()

    def preprocess(self, raw: VideoClip | Any) -> torch.Tensor:
        """A :class:`VideoClip` (or a path / bytes, decoded with :func:`~mmrec.encoders.media.load_video`)
        -> ``(T, 3, size, size)`` float32 in [0, 1]."""
        clip = raw if isinstance(raw, VideoClip) else load_video(raw, num_frames=self.num_frames)
        frames = np.asarray(clip.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise MediaError("undecodable video", f"expected (T, H, W, 3) frames, got shape {frames.shape}")
        idx = sample_frame_indices(frames.shape[0], self.num_frames, "uniform")
        x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
        return x.clamp_(0, 1).contiguous()

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float()  # (B, T, 3, S, S)
        b, t = x.shape[:2]
        hist = _joint_hist(_rgb_codes(x.flatten(0, 1)), 64).sqrt().view(b, t, 64).mean(1)
        g = _gray(x)  # (B, T, S, S)
        it = g[:, 1:] - g[:, :-1]  # temporal derivative between sampled frames
        energy = it.abs().mean(dim=(-1, -2)) * 10.0  # (B, T-1)
        mid = ((g[:, 1:] + g[:, :-1]) / 2).flatten(0, 1).unsqueeze(1)
        grad = F.conv2d(mid, self.sobel.float(), padding=1).view(b, t - 1, 2, self.size, self.size)
        ix, iy = grad[:, :, 0], grad[:, :, 1]
        # normal flow direction histogram, weighted by |I_t| where there is spatial structure
        g2 = ix * ix + iy * iy
        valid = g2 > 1e-4
        nx = torch.where(valid, -it * ix / g2.clamp_min(1e-4), torch.zeros_like(ix))
        ny = torch.where(valid, -it * iy / g2.clamp_min(1e-4), torch.zeros_like(iy))
        angle = torch.atan2(ny, nx) % (2 * math.pi)
        dbin = (angle / (2 * math.pi) * self.DIRECTION_BINS).long().clamp_(0, self.DIRECTION_BINS - 1)
        w = it.abs() * valid
        dhist = torch.zeros(b, self.DIRECTION_BINS, device=x.device)
        dhist.scatter_add_(1, dbin.flatten(1), w.flatten(1))
        total = dhist.sum(1, keepdim=True)
        presence = 1.0 - torch.exp(-10.0 * energy.mean(1, keepdim=True))
        dhist = (dhist / total.clamp_min(1e-8)).sqrt() * presence
        # global Lucas-Kanade translation per frame pair, averaged over pairs
        sxx, syy, sxy = (ix * ix).sum((-1, -2)), (iy * iy).sum((-1, -2)), (ix * iy).sum((-1, -2))
        sxt, syt = (ix * it).sum((-1, -2)), (iy * it).sum((-1, -2))
        det = sxx * syy - sxy * sxy
        ok = det > 1e-6
        u = torch.where(ok, -(syy * sxt - sxy * syt) / det.clamp_min(1e-6), torch.zeros_like(det))
        v = torch.where(ok, -(sxx * syt - sxy * sxt) / det.clamp_min(1e-6), torch.zeros_like(det))
        translation = torch.stack([u.mean(1), v.mean(1)], dim=1).clamp(-3, 3) / 3.0
        stats = torch.stack([energy.mean(1), energy.max(1).values], dim=1)
        return torch.cat([hist, energy, stats, dhist, translation], dim=1)

    def preprocessing_config(self) -> dict[str, Any]:
        return {
            "num_frames": self.num_frames,
            "sampling": "uniform",
            "size": self.size,
            "resample": "bilinear-aa",
        }

    def pooling(self) -> str:
        return "mean over frames + motion profile"


# ---------------------------------------------------------------------------------------------- registry
@ENCODERS.register("classic/color-histogram", tiny=True, modality="image", dim=201)
def color_histogram(**kwargs: Any) -> ColorHistogramEncoder:
    """Weight-free image encoder: colour histograms, colour moments and gradient orientations (D=201)."""
    return ColorHistogramEncoder(**kwargs)


@ENCODERS.register("classic/log-mel", tiny=True, modality="audio", dim=131)
def log_mel(**kwargs: Any) -> LogMelEncoder:
    """Weight-free audio encoder: log-mel band statistics and spectral centroid at 16 kHz (D=131)."""
    return LogMelEncoder(**kwargs)


@ENCODERS.register("classic/video-stats", tiny=True, modality="video", dim=91)
def video_stats(**kwargs: Any) -> VideoStatsEncoder:
    """Weight-free video encoder: mean colour histogram, motion energy profile, motion direction (D=91)."""
    return VideoStatsEncoder(**kwargs)
