"""Video encoders: two frozen towers joined late, ``video/slowfast`` (+ ``video/slow``, ``video/fast``).

**What this is, and what it is not.** The key ``video/slowfast`` names the two frame rates it samples, not the
SlowFast network (Feichtenhofer et al., 2019). It is *late fusion of two independent, frozen, separately
pre-trained towers*: an image model applied to a few frames and a 3D CNN applied to a dense clip, each pooled
to one vector, then normalised and concatenated (or averaged). There are **no lateral connections** between
the pathways, no jointly trained fusion and no end-to-end training: nothing here was trained as a two-pathway
video model. Which parts carry pretrained weights:

- slow tower = the chosen image encoder with *its* weights (default ``open_clip/ViT-B-32``, which needs
  open_clip weights supplied; offline, ``image/efficientnet-lite0`` with the bundled ImageNet weights works);
- fast tower = a torchvision video backbone with Kinetics-400 weights when they are supplied
  (``R2Plus1D_18_Weights.KINETICS400_V1`` from the torch hub cache, a local file or folder), otherwise it
  refuses to build unless ``weights: random`` is asked for;
- fusion = parameter-free (L2 normalisation, optional *fixed random* projection, concat / mean): no weights.

The store manifest records both towers' weight identities (``slow=...;fast=...``). A real SlowFast network
(a slow pathway at a low frame rate, a light fast pathway at a high frame rate, lateral fast-to-slow fusion
trained jointly) is not implemented.

- **Slow pathway** (appearance): ``slow_frames`` frames (default 4) spread uniformly over the clip go
  through any registered *image* encoder (``image_encoder`` + ``image_encoder_kwargs``, e.g.
  ``open_clip/ViT-B-32``); the frame vectors are mean-pooled.
- **Fast pathway** (motion): ``fast_frames`` consecutive frames (default 16) at ``fast_fps`` from the centre
  of the clip go through a torchvision video backbone (``r2plus1d_18``, ``r3d_18``, ``mc3_18``,
  ``mvit_v2_s``, ``mvit_v1_b``, ``s3d``, ``swin3d_t``) whose classification head (``fc`` / ``head`` /
  ``classifier``) is replaced by ``Identity``; input normalisation is torchvision's for that backbone
  (Kinetics mean / std, resize then centre crop to its size; ``size`` shrinks it for tiny tests).
- **Fusion**: each pathway vector is L2-normalised (``pathway_norm``) and optionally projected to
  ``proj_dim`` by a fixed seeded Gaussian random projection (distance-preserving, no training); then
  ``concat`` (default, D = Ds + Df) or ``mean`` (D = proj_dim, or the common dim).

Weights (DESIGN §5): the image encoder resolves its own (``image_encoder_kwargs={"weights": ...}``); the
fast backbone's ``weights`` is

- a torchvision weight enum name as hub tag (``R2Plus1D_18_Weights.KINETICS400_V1``, or just
  ``KINETICS400_V1`` / ``DEFAULT``) -> the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or a download;
- a local file -> a state dict (``.safetensors``, or torch with ``weights_only=True``); classifier keys
  are dropped, ``module.`` / ``backbone.`` prefixes stripped, anything else must match;
- a local directory holding one checkpoint (``model.safetensors``, ``*.pth``...);
- ``random`` -> seeded random init (logged loudly).

Raw input: a :class:`~mmrec.encoders.base.VideoClip` (both pathways sample from its frames; decode it with
``decode_args()``, e.g. 64 uniform frames), or a path / bytes, which is decoded twice: uniformly for the
slow pathway and densely at ``fast_fps`` for the fast one.

Tiny test variants (``tiny=True``): ``video/tiny-slowfast``, ``video/tiny-slow``, ``video/tiny-fast``: slow =
``timm/tiny`` (or ``open_clip/tiny``, else ``classic/color-histogram``), fast = a narrow torchvision
``VideoResNet`` (widths 8-64, one block per stage) on 8 frames of 32x32, random weights.

The fast tower (backbone table, building, weight loading) lives in :mod:`mmrec.encoders.video_backbones`,
the tiny test network in :mod:`mmrec.encoders.video_tiny`; their public names are re-exported here.

Example:
    >>> import numpy as np
    >>> from mmrec.encoders import create_encoder
    >>> from mmrec.encoders.base import VideoClip
    >>> enc = create_encoder("video/tiny-slowfast")
    >>> clip = VideoClip(np.zeros((12, 40, 48, 3), np.uint8), fps=10.0)
    >>> enc.encode_raw([clip]).shape == (1, enc.output_dim)
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmrec.encoders import ENCODERS, create_encoder
from mmrec.encoders.base import FrozenEncoder, VideoClip
from mmrec.encoders.media import MediaError, load_video, sample_frame_indices
from mmrec.encoders.video_backbones import (
    KINETICS_MEAN,
    KINETICS_STD,
    VIDEO_BACKBONES,
    VideoBackbone,
    build_backbone,
    load_backbone_state_dict,
)
from mmrec.encoders.video_tiny import TINY_WIDTHS, NarrowVideoResNet

log = logging.getLogger(__name__)

Fusion = Literal["concat", "mean"]
Pathways = Literal["both", "slow", "fast"]


def _random_projection(d_in: int, d_out: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(d_in, d_out, generator=gen) / d_out**0.5


def _default_image_encoder() -> str:
    for name in ("timm/tiny", "open_clip/tiny", "classic/color-histogram"):
        if name in ENCODERS:
            return name
    return "classic/color-histogram"


class SlowFastEncoder(FrozenEncoder):
    """Two-tower late-fusion video encoder: a frozen image encoder on a few frames + a frozen video backbone
    on dense frames, pooled separately and concatenated / averaged. Not a SlowFast network: no lateral
    connections, nothing trained jointly (see the module docstring for which parts carry pretrained weights).

    Args:
        pathways: ``both``, ``slow`` (image encoder only) or ``fast`` (video backbone only).
        image_encoder: registry name of the slow pathway's image encoder.
        image_encoder_kwargs: its options (``weights``...).
        backbone: fast backbone, a key of :data:`VIDEO_BACKBONES`.
        weights: fast backbone weights (hub tag = torchvision enum name, file, folder, ``random``;
            ``None``: the enum's ``DEFAULT``).
        slow_frames: frames of the slow pathway (uniform over the clip).
        fast_frames: frames of the fast pathway (consecutive at ``fast_fps``; default per backbone).
        fast_fps: sampling rate of the fast pathway (``None``: the clip's own frames, consecutive).
        size: fast crop size (default: the backbone's, e.g. 112); the resize scales along.
        fusion: ``concat`` or ``mean``.
        proj_dim: project each pathway to this dim with a fixed seeded random projection before fusing.
        pathway_norm: L2-normalise each pathway vector before fusing (balances their scales).
        dtype: compute dtype.
        normalize: L2-normalise the output.
        seed: seed of random inits and of the projection.
        name: registry key.

    Example:
        >>> enc = create_encoder("video/tiny-slowfast", fusion="mean", proj_dim=16)  # doctest: +SKIP
        >>> enc.output_dim  # doctest: +SKIP
        16
    """

    modality = "video"

    def __init__(
        self,
        pathways: Pathways = "both",
        image_encoder: str = "open_clip/ViT-B-32",
        image_encoder_kwargs: Mapping[str, Any] | None = None,
        backbone: str = "r2plus1d_18",
        weights: str | os.PathLike[str] | None = None,
        *,
        slow_frames: int = 4,
        fast_frames: int | None = None,
        fast_fps: float | Literal["default"] | None = "default",
        size: int | None = None,
        fusion: Fusion = "concat",
        proj_dim: int | None = None,
        pathway_norm: bool = True,
        dtype: str = "float32",
        normalize: bool = False,
        seed: int = 0,
        name: str = "video/slowfast",
    ) -> None:
        if pathways not in ("both", "slow", "fast"):
            raise ValueError(f"pathways must be 'both', 'slow' or 'fast', got {pathways!r}")
        if fusion not in ("concat", "mean"):
            raise ValueError(f"fusion must be 'concat' or 'mean', got {fusion!r}")
        if backbone not in VIDEO_BACKBONES:
            raise ValueError(f"unknown video backbone {backbone!r}; choose one of {sorted(VIDEO_BACKBONES)}")
        if slow_frames < 1:
            raise ValueError(f"slow_frames must be >= 1, got {slow_frames}")
        arch = VIDEO_BACKBONES[backbone]
        self_slow = pathways in ("both", "slow")
        self_fast = pathways in ("both", "fast")
        parts: list[str] = []
        image: FrozenEncoder | None = None
        fast: nn.Module | None = None
        slow_dim = fast_dim = 0
        if self_slow:
            image_kwargs = {"dtype": dtype, **dict(image_encoder_kwargs or {})}
            image = create_encoder(image_encoder, **image_kwargs)
            if image.modality != "image":
                raise ValueError(
                    f"image_encoder must be an image encoder, {image_encoder!r} is a {image.modality} encoder"
                )
            slow_dim = image.output_dim
            parts.append(f"slow={image.weights_identity}")
        if self_fast:
            fast, fast_dim, fast_identity = build_backbone(backbone, weights, seed)
            parts.append(f"fast={fast_identity}")
        joined = ";".join(parts)
        identity = f"random-init:{seed}({joined})" if "random-init" in joined else joined
        super().__init__(name=name, weights=identity, dtype=dtype, normalize=normalize)
        self.pathways = pathways
        self.image_encoder = image
        self.fast = fast
        self.image_encoder_name = image_encoder if self_slow else None
        self.backbone_name = backbone if self_fast else None
        self.slow_frames = int(slow_frames)
        self.fast_frames = int(fast_frames or arch.frames)
        if self_fast and backbone.startswith("mvit") and self.fast_frames != 16:
            raise ValueError(f"{backbone} takes exactly 16 frames, got fast_frames={self.fast_frames}")
        self.fast_fps = arch.fps if fast_fps == "default" else fast_fps
        self.crop = int(size or arch.crop)
        self.resize = tuple(round(r * self.crop / arch.crop) for r in arch.resize)
        self.mean, self.std = tuple(arch.mean), tuple(arch.std)
        self.fusion = fusion
        self.pathway_norm = pathway_norm
        self.proj_dim = proj_dim
        self.seed = seed
        dims = [d for d in (slow_dim, fast_dim) if d]
        if proj_dim is not None:
            if proj_dim < 1:
                raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")
            if self_slow:
                self.register_buffer(
                    "proj_slow", _random_projection(slow_dim, proj_dim, seed), persistent=False
                )
            if self_fast:
                self.register_buffer(
                    "proj_fast", _random_projection(fast_dim, proj_dim, seed + 1), persistent=False
                )
            dims = [proj_dim] * len(dims)
        if pathways == "both" and fusion == "mean" and dims[0] != dims[1]:
            raise ValueError(
                f"fusion='mean' needs pathways of equal size, got slow {dims[0]} and fast {dims[1]}; "
                "set proj_dim (e.g. proj_dim=512) or use fusion='concat'."
            )
        self.output_dim = dims[0] if pathways != "both" or fusion == "mean" else sum(dims)
        self.freeze()

    # ------------------------------------------------------------------ helpers
    def decode_args(self) -> dict[str, Any]:
        """Suggested :func:`~mmrec.encoders.media.load_video` arguments for a clip that serves both pathways."""
        if self.pathways == "slow":
            return {"num_frames": self.slow_frames, "sampling": "uniform"}
        if self.pathways == "fast":
            return {"num_frames": self.fast_frames, "sampling": "dense", "fps": self.fast_fps}
        return {"num_frames": max(64, self.fast_frames), "sampling": "uniform"}

    def _fast_transform(self, frames: np.ndarray) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 -> ``(3, T, crop, crop)`` normalised."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        if len(self.resize) == 1:
            scale = self.resize[0] / min(h, w)
            out_hw = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        else:
            out_hw = (max(self.crop, self.resize[0]), max(self.crop, self.resize[1]))
        x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
        top, left = (out_hw[0] - self.crop) // 2, (out_hw[1] - self.crop) // 2
        x = x[..., top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()

    # ------------------------------------------------------------------ contract
    def preprocess(self, raw: VideoClip | Any) -> dict[str, Any]:
        """One clip -> ``{"slow": (Ts, 3, H, W), "fast": (3, Tf, crop, crop)}`` (only the active pathways).

        Args:
            raw: a :class:`VideoClip`, or a path / bytes (decoded once per pathway).
        """
        out: dict[str, Any] = {}
        if isinstance(raw, VideoClip):
            frames = np.asarray(raw.frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
                raise MediaError(
                    "undecodable video", f"expected (T, H, W, 3) uint8 frames, got shape {frames.shape}"
                )
            slow_src = (
                frames[sample_frame_indices(len(frames), self.slow_frames, "uniform")]
                if self.image_encoder
                else None
            )
            fast_src = None
            if self.fast is not None:
                # never upsample: a clip decoded at a lower rate than fast_fps gives its consecutive frames
                rate = self.fast_fps if self.fast_fps and raw.fps and raw.fps > self.fast_fps else None
                idx = sample_frame_indices(
                    len(frames), self.fast_frames, "dense", src_fps=raw.fps or None, fps=rate, anchor="center"
                )
                fast_src = frames[idx]
        else:
            slow_src = load_video(raw, num_frames=self.slow_frames).frames if self.image_encoder else None
            fast_src = (
                load_video(raw, num_frames=self.fast_frames, sampling="dense", fps=self.fast_fps).frames
                if self.fast is not None
                else None
            )
        image = self.image_encoder
        if image is not None and slow_src is not None:
            items = [image.preprocess(Image.fromarray(f)) for f in slow_src]
            out["slow"] = torch.stack(items) if isinstance(items[0], torch.Tensor) else items
        if fast_src is not None:
            out["fast"] = self._fast_transform(fast_src)
        return out

    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Stack: ``slow`` ``(B, Ts, 3, H, W)``, ``fast`` ``(B, 3, Tf, crop, crop)``."""
        batch: dict[str, Any] = {}
        if self.image_encoder is not None:
            slows = [it["slow"] for it in items]
            if isinstance(slows[0], torch.Tensor):
                batch["slow"] = torch.stack(slows)
            else:  # image encoders with a custom collate: flatten the frames, collate them together
                batch["slow"] = self.image_encoder.collate([f for s in slows for f in s])
                batch["slow_frames"] = torch.tensor([len(s) for s in slows])
        if self.fast is not None:
            batch["fast"] = torch.stack([it["fast"] for it in items])
        return batch

    def _encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        vecs: list[torch.Tensor] = []
        if self.image_encoder is not None:
            slow = batch["slow"]
            if isinstance(slow, torch.Tensor) and "slow_frames" not in batch:
                b, t = slow.shape[:2]
                frame_vecs = self.image_encoder.encode(slow.flatten(0, 1)).view(b, t, -1)
            else:
                b, t = int(batch["slow_frames"].shape[0]), int(batch["slow_frames"][0])
                frame_vecs = self.image_encoder.encode(slow).view(b, t, -1)
            vecs.append(self._finish(frame_vecs.float().mean(1), "proj_slow"))
        if self.fast is not None:
            vecs.append(self._finish(self.fast(batch["fast"]).float(), "proj_fast"))
        if len(vecs) == 1:
            return vecs[0]
        return torch.cat(vecs, dim=1) if self.fusion == "concat" else (vecs[0] + vecs[1]) / 2

    def _finish(self, v: torch.Tensor, proj: str) -> torch.Tensor:
        if self.pathway_norm and self.pathways == "both":
            v = F.normalize(v, dim=-1)
        if self.proj_dim is not None:
            v = v @ getattr(self, proj).float()
        return v

    def preprocessing_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"pathways": self.pathways}
        if self.image_encoder is not None:
            cfg["slow"] = {
                "frames": self.slow_frames,
                "sampling": "uniform",
                "image_encoder": self.image_encoder_name,
                "image_encoder_fingerprint": self.image_encoder.fingerprint(),
            }
        if self.fast is not None:
            cfg["fast"] = {
                "backbone": self.backbone_name,
                "frames": self.fast_frames,
                "fps": self.fast_fps,
                "sampling": "dense-center",
                "crop": self.crop,
                "resize": list(self.resize),
                "mean": list(self.mean),
                "std": list(self.std),
            }
        return cfg

    def pooling(self) -> str:
        fuse = f"{self.fusion}" + (
            f" after random projection to {self.proj_dim} (seed {self.seed})" if self.proj_dim else ""
        )
        norm = "L2-normalised pathways, " if self.pathway_norm and self.pathways == "both" else ""
        return f"slow: mean over frames; fast: backbone global pool; {norm}{fuse}"


# ------------------------------------------------------------------------------------------ registry
@ENCODERS.register(
    "video/slowfast",
    modality="video",
    default_weights="R2Plus1D_18_Weights.KINETICS400_V1",
    dim=1024,
    architecture="late fusion of two frozen towers (image encoder on frames + 3D CNN on a clip); no lateral connections",
)
def slowfast(**kwargs: Any) -> SlowFastEncoder:
    """Late fusion of two frozen towers (named for SlowFast's two frame rates; NOT a SlowFast network: no lateral
    connections, nothing trained jointly): ``image_encoder`` (its own pretrained weights, default
    open_clip/ViT-B-32) mean-pooled over 4 uniform frames, concatenated with ``backbone`` (r2plus1d_18,
    Kinetics-400 weights) pooled over 16 dense frames; each tower L2-normalised, no fusion weights."""
    return SlowFastEncoder("both", **{"name": "video/slowfast", **kwargs})


@ENCODERS.register("video/slow", modality="video", dim=512)
def slow(**kwargs: Any) -> SlowFastEncoder:
    """Slow pathway only: an image encoder over uniformly sampled frames, mean-pooled."""
    return SlowFastEncoder("slow", **{"name": "video/slow", **kwargs})


@ENCODERS.register(
    "video/fast", modality="video", default_weights="R2Plus1D_18_Weights.KINETICS400_V1", dim=512
)
def fast(**kwargs: Any) -> SlowFastEncoder:
    """Fast pathway only: a torchvision video backbone on dense frames, head removed."""
    return SlowFastEncoder("fast", **{"name": "video/fast", **kwargs})


def _tiny_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {
        "image_encoder": _default_image_encoder(),
        "backbone": "tiny_r3d",
        "weights": "random",
        "slow_frames": 2,
        "fast_frames": 8,
        "fast_fps": None,
        "size": 32,
    }
    out.update(kwargs)
    return out


@ENCODERS.register("video/tiny-slowfast", modality="video", tiny=True, dim=96)
def tiny_slowfast(**kwargs: Any) -> SlowFastEncoder:
    """Tiny random SlowFast for tests: timm/tiny (or open_clip/tiny, else classic) + a narrow VideoResNet."""
    return SlowFastEncoder("both", **{"name": "video/tiny-slowfast", **_tiny_kwargs(kwargs)})


@ENCODERS.register("video/tiny-slow", modality="video", tiny=True, dim=32)
def tiny_slow(**kwargs: Any) -> SlowFastEncoder:
    """Tiny slow pathway only (the tiny image encoder over 2 frames)."""
    return SlowFastEncoder("slow", **{"name": "video/tiny-slow", **_tiny_kwargs(kwargs)})


@ENCODERS.register("video/tiny-fast", modality="video", tiny=True, dim=64)
def tiny_fast(**kwargs: Any) -> SlowFastEncoder:
    """Tiny fast pathway only (a narrow random VideoResNet on 8 frames of 32x32)."""
    return SlowFastEncoder("fast", **{"name": "video/tiny-fast", **_tiny_kwargs(kwargs)})


# the fast tower and the tiny network live in modules of their own; their names stay importable from here
__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "TINY_WIDTHS",
    "VIDEO_BACKBONES",
    "NarrowVideoResNet",
    "SlowFastEncoder",
    "VideoBackbone",
    "build_backbone",
    "load_backbone_state_dict",
]
