"""Audio (transformers), video (SlowFast-like) and classic encoders: tiny models, offline, on real media."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mmrec.encoders import MissingWeightsError, create_encoder
from mmrec.encoders.base import AudioClip, VideoClip

TINY_AUDIO = [
    "hf_audio/tiny-ast",
    "hf_audio/tiny-whisper",
    "hf_audio/tiny-wav2vec2",
    "hf_audio/tiny-hubert",
    "hf_audio/tiny-clap",
]


def tone(freq: float, seconds: float, sr: int = 16000, amp: float = 0.5, phase: float = 0.0) -> AudioClip:
    t = np.arange(int(sr * seconds)) / sr
    return AudioClip((amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32), sr)


def noise(seconds: float, seed: int, sr: int = 16000) -> AudioClip:
    return AudioClip(
        (0.1 * np.random.default_rng(seed).standard_normal(int(sr * seconds))).astype(np.float32), sr
    )


def moving_square(
    n: int = 16, dx: int = 0, hw: int = 48, colour: tuple[int, int, int] = (230, 200, 30)
) -> VideoClip:
    frames = np.full((n, hw, hw, 3), 40, np.uint8)
    for i in range(n):
        x0 = 8 + dx * i
        frames[i, 16:32, x0 : x0 + 12] = colour
    return VideoClip(frames, fps=10.0)


def mp4_bytes(clip: VideoClip) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=int(clip.fps))
        stream.height, stream.width, stream.pix_fmt = clip.frames.shape[1], clip.frames.shape[2], "yuv420p"
        for f in clip.frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


def assert_three_ways(err: BaseException) -> None:
    text = str(err)
    assert "hub tag" in text and "local checkpoint file" in text and "local directory" in text


# ------------------------------------------------------------------------------------------------ audio
def test_long_audio_is_chunked_and_pooled() -> None:
    enc = create_encoder("hf_audio/tiny-whisper")
    assert enc.chunk_seconds == 1.0
    long_clip = noise(2.5, seed=0)  # 2.5 windows -> 3 chunks (1 s, 1 s, 0.5 s)
    item = enc.preprocess(long_clip)
    assert item["inputs"].shape[0] == 3 and item["lengths"].tolist() == [16000, 16000, 8000]
    batch = enc.collate([enc.preprocess(noise(0.6, seed=1)), item])
    assert batch["owner"].tolist() == [0, 1, 1, 1] and batch["counts"].tolist() == [1, 3]
    assert enc.encode(batch).shape == (2, enc.output_dim)
    # the pooled vector is the duration-weighted mean of the chunks encoded on their own
    chunks = [AudioClip(long_clip.waveform[s : s + 16000], 16000) for s in (0, 16000, 32000)]
    each = enc.encode_raw(chunks)
    expected = (each * torch.tensor([1.0, 1.0, 0.5])[:, None]).sum(0) / 2.5
    assert torch.allclose(enc.encode_raw([long_clip])[0], expected, atol=1e-5)


@pytest.mark.parametrize("name", TINY_AUDIO)
def test_batched_chunks_equal_items_encoded_alone(name: str) -> None:
    enc = create_encoder(name)
    short, long = noise(0.7, seed=2), noise(2.5, seed=3)
    assert enc.preprocess(long)["lengths"].shape[0] == 3
    together = enc.encode_raw([short, long])
    alone = torch.cat([enc.encode_raw([short]), enc.encode_raw([long])])
    assert together.shape == (2, 32)
    assert torch.allclose(together, alone, atol=1e-5)


def test_group_norm_waveform_model_is_batch_invariant() -> None:
    from mmrec.encoders.audio_encoders import TINY_CONFIGS

    cfg = {**TINY_CONFIGS["wav2vec2"], "feat_extract_norm": "group", "do_stable_layer_norm": False}
    enc = create_encoder("hf_audio/tiny-wav2vec2", config=cfg)
    assert not enc.use_attention_mask
    a, b = noise(0.3, seed=4), noise(1.6, seed=5)
    assert torch.allclose(
        enc.encode_raw([a, b]), torch.cat([enc.encode_raw([a]), enc.encode_raw([b])]), atol=1e-5
    )


def test_resampled_stereo_input_matches_mono_16k() -> None:
    enc = create_encoder("hf_audio/tiny-wav2vec2")
    mono = tone(440, 1.0, sr=16000)
    stereo = AudioClip(np.stack([mono.waveform, mono.waveform]), 16000)
    assert torch.allclose(enc.encode_raw([stereo]), enc.encode_raw([mono]), atol=1e-6)
    hi = tone(440, 1.0, sr=48000)
    assert enc.preprocess(hi)["lengths"].tolist() == [16000]


@pytest.mark.parametrize("kind", ["ast", "whisper", "wav2vec2", "hubert", "clap"])
def test_audio_local_directory_round_trip(kind: str, tmp_path: Path) -> None:
    tiny = create_encoder(f"hf_audio/tiny-{kind}", seed=7)
    tiny.save_pretrained(tmp_path / kind)
    assert (tmp_path / kind / "config.json").is_file() and (
        tmp_path / kind / "preprocessor_config.json"
    ).is_file()
    loaded = create_encoder(f"hf_audio/{kind}", weights=tmp_path / kind, chunk_seconds=1.0)
    auto = create_encoder("hf_audio/auto", weights=str(tmp_path / kind), chunk_seconds=1.0)
    assert loaded.weights_identity.startswith("dir:") and auto.kind == kind
    clips = [noise(0.8, seed=6), noise(1.9, seed=8)]
    ref = tiny.encode_raw(clips)
    assert torch.allclose(loaded.encode_raw(clips), ref, atol=1e-6)
    assert torch.allclose(auto.encode_raw(clips), ref, atol=1e-6)


def test_audio_local_file_with_prefixed_keys_and_config(tmp_path: Path) -> None:
    tiny = create_encoder("hf_audio/tiny-wav2vec2", seed=3)
    # a CTC-style checkpoint: backbone under "wav2vec2.", plus a head the encoder does not use
    sd = {f"wav2vec2.{k}": v.contiguous() for k, v in tiny.backbone.state_dict().items()}
    sd["lm_head.weight"] = torch.zeros(5, 32)
    save_file(sd, str(tmp_path / "w2v.safetensors"))
    cfg = tiny.backbone.config.to_dict()
    from mmrec.encoders.audio_encoders import TINY_FEATURE_EXTRACTOR

    loaded = create_encoder(
        "hf_audio/wav2vec2",
        weights=tmp_path / "w2v.safetensors",
        config=cfg,
        chunk_seconds=1.0,
        feature_extractor_kwargs=TINY_FEATURE_EXTRACTOR["wav2vec2"],
    )
    assert loaded.weights_identity.startswith("sha256:")
    clip = [noise(1.2, seed=9)]
    assert torch.allclose(loaded.encode_raw(clip), tiny.encode_raw(clip), atol=1e-6)

    # a Whisper seq2seq-style file (keys under model.encoder.), config.json next to it, kind detected
    whisper = create_encoder("hf_audio/tiny-whisper", seed=1)
    wsd = {f"model.encoder.{k}": v.contiguous() for k, v in whisper.backbone.state_dict().items()}
    (tmp_path / "wh").mkdir()
    save_file(wsd, str(tmp_path / "wh" / "weights.safetensors"))
    whisper.backbone.config.save_pretrained(tmp_path / "wh")
    auto = create_encoder("hf_audio/auto", weights=tmp_path / "wh" / "weights.safetensors")
    assert auto.kind == "whisper" and auto.chunk_seconds == 1.0
    assert torch.allclose(auto.encode_raw(clip), whisper.encode_raw(clip), atol=1e-6)

    wrong = create_encoder("hf_audio/tiny-hubert").backbone.config.to_dict()
    wrong["hidden_size"] = 48
    with pytest.raises(ValueError, match="does not fit"):
        create_encoder(
            "hf_audio/hubert",
            weights=tmp_path / "w2v.safetensors",
            config={**wrong, "num_attention_heads": 2},
        )
    with pytest.raises(ValueError, match="config="):
        create_encoder("hf_audio/wav2vec2", weights=tmp_path / "w2v.safetensors")


def test_audio_missing_weights_name_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as e:
        create_encoder("hf_audio/ast")  # default hub id; hubs are offline in tests
    assert_three_ways(e.value)
    assert "MIT/ast-finetuned-audioset" in str(e.value)
    with pytest.raises(MissingWeightsError) as e:
        create_encoder("hf_audio/auto", weights=str(tmp_path / "missing" / "model.safetensors"))
    assert_three_ways(e.value)
    with pytest.raises(ValueError, match="exceeds"):
        create_encoder("hf_audio/tiny-whisper", chunk_seconds=5.0)


def test_audio_fingerprint_tracks_preprocessing() -> None:
    a = create_encoder("hf_audio/tiny-wav2vec2")
    assert a.fingerprint() != create_encoder("hf_audio/tiny-wav2vec2", chunk_seconds=0.5).fingerprint()
    assert a.fingerprint() != create_encoder("hf_audio/tiny-wav2vec2", seed=1).fingerprint()
    assert a.describe()["weights"] == "random-init:0"


# ------------------------------------------------------------------------------------------------ video
def test_slowfast_shapes_for_each_fusion_and_pathway() -> None:
    clip = moving_square(12, 1)
    both = create_encoder("video/tiny-slowfast")
    item = both.preprocess(clip)
    assert item["slow"].shape == (2, 3, 32, 32) and item["fast"].shape == (3, 8, 32, 32)
    batch = both.collate([item, item])
    assert batch["slow"].shape == (2, 2, 3, 32, 32) and batch["fast"].shape == (2, 3, 8, 32, 32)
    slow_dim = create_encoder("video/tiny-slow").output_dim
    fast_dim = create_encoder("video/tiny-fast").output_dim
    assert both.output_dim == slow_dim + fast_dim
    assert both.encode(batch).shape == (2, slow_dim + fast_dim)
    short = both.preprocess(moving_square(3, 1))  # fewer frames than the fast pathway needs: last repeats
    assert short["fast"].shape == (3, 8, 32, 32) and torch.equal(short["fast"][:, 2], short["fast"][:, 7])

    mean = create_encoder("video/tiny-slowfast", fusion="mean", proj_dim=16)
    assert mean.output_dim == 16 and mean.encode_raw([clip]).shape == (1, 16)
    cat_proj = create_encoder("video/tiny-slowfast", proj_dim=16)
    assert cat_proj.encode_raw([clip]).shape == (1, 32)
    with pytest.raises(ValueError, match="proj_dim"):
        create_encoder("video/tiny-slowfast", fusion="mean")
    # the slow pathway is the image encoder's mean over the uniformly sampled frames
    slow = create_encoder("video/tiny-slow")
    frames = [Image.fromarray(clip.frames[i]) for i in (3, 9)]  # uniform 2 of 12: segment centres
    assert torch.allclose(
        slow.encode_raw([clip])[0], slow.image_encoder.encode_raw(frames).mean(0), atol=1e-5
    )


def test_slowfast_decodes_files_and_bytes(tmp_path: Path) -> None:
    data = mp4_bytes(moving_square(20, 1))
    (tmp_path / "v.mp4").write_bytes(data)
    enc = create_encoder("video/tiny-slowfast", image_encoder="classic/color-histogram")
    assert enc.weights_identity.startswith("random-init:0(slow=none:classic-v1;fast=random-init:0")
    from_path, from_bytes = enc.encode_raw([tmp_path / "v.mp4"]), enc.encode_raw([data])
    assert from_path.shape == (1, enc.output_dim) and torch.allclose(from_path, from_bytes)


def test_fast_backbone_local_file_and_directory(tmp_path: Path) -> None:
    ref = create_encoder("video/tiny-fast", seed=5)
    sd = {f"module.{k}": v.clone() for k, v in ref.fast.state_dict().items()}
    sd["module.fc.weight"], sd["module.fc.bias"] = (
        torch.zeros(400, 64),
        torch.zeros(400),
    )  # a classifier: ignored
    torch.save(sd, tmp_path / "fast.pth")
    (tmp_path / "d").mkdir()
    save_file({k[len("module.") :]: v for k, v in sd.items()}, str(tmp_path / "d" / "model.safetensors"))
    clip = [moving_square(10, 2)]
    from_file = create_encoder("video/tiny-fast", weights=tmp_path / "fast.pth")
    from_dir = create_encoder("video/tiny-fast", weights=tmp_path / "d")
    assert from_file.weights_identity.startswith("fast=sha256:") and from_dir.weights_identity.startswith(
        "fast=dir:"
    )
    assert torch.allclose(from_file.encode_raw(clip), ref.encode_raw(clip), atol=1e-6)
    assert torch.allclose(from_dir.encode_raw(clip), ref.encode_raw(clip), atol=1e-6)
    assert not torch.allclose(
        create_encoder("video/tiny-fast", seed=6).encode_raw(clip), ref.encode_raw(clip)
    )

    bad = {k: v for k, v in sd.items() if "layer4" not in k}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit"):
        create_encoder("video/tiny-fast", weights=tmp_path / "bad.pth")


def test_fast_backbone_missing_weights_name_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as e:
        create_encoder("video/fast", weights="R2Plus1D_18_Weights.KINETICS400_V1")
    assert_three_ways(e.value)
    assert "R2Plus1D_18_Weights.KINETICS400_V1" in str(e.value)
    with pytest.raises(MissingWeightsError) as e:
        create_encoder("video/fast", backbone="r3d_18", weights="NOT_A_TAG")
    assert_three_ways(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError) as e:
        create_encoder("video/tiny-fast", weights=tmp_path / "empty")
    assert_three_ways(e.value)


# ---------------------------------------------------------------------------------------------- classic
def _dist(v: torch.Tensor, i: int, j: int) -> float:
    return float((v[i] - v[j]).norm())


def test_classic_encoders_have_no_weights_and_warn_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        encs = [
            create_encoder(n) for n in ("classic/color-histogram", "classic/log-mel", "classic/video-stats")
        ]
    assert not [r for r in caplog.records if "RANDOMLY" in r.getMessage()]
    for enc in encs:
        assert enc.describe()["weights"] == "none:classic-v1"
        assert json.dumps(enc.describe())  # serialisable manifest entry
    with pytest.raises(ValueError, match="no weights"):
        create_encoder("classic/log-mel", weights="/some/file.safetensors")


def test_color_histogram_separates_colours_and_textures() -> None:
    rng = np.random.default_rng(0)

    def img(rgb: tuple[int, int, int]) -> Image.Image:
        noise_ = rng.normal(0, 8, (50, 60, 3))
        return Image.fromarray(np.clip(np.array(rgb) + noise_, 0, 255).astype(np.uint8))

    stripes_h = np.zeros((64, 64, 3), np.uint8)
    stripes_h[::8] = stripes_h[1::8] = stripes_h[2::8] = stripes_h[3::8] = 255
    stripes_v = stripes_h.transpose(1, 0, 2).copy()
    enc = create_encoder("classic/color-histogram")
    v = enc.encode_raw(
        [
            img((200, 20, 20)),
            img((215, 30, 25)),
            img((20, 20, 200)),
            Image.fromarray(stripes_h),
            Image.fromarray(stripes_v),
        ]
    )
    assert _dist(v, 0, 2) > 5 * _dist(v, 0, 1)  # red vs blue far apart, red vs red close
    assert _dist(v, 3, 4) > 0.5  # same colours, different pattern orientation
    assert torch.equal(
        enc.encode_raw([Image.fromarray(stripes_h)]), enc.encode_raw([Image.fromarray(stripes_h)])
    )


def test_log_mel_separates_pitches_and_is_deterministic() -> None:
    enc = create_encoder("classic/log-mel")
    v = enc.encode_raw(
        [tone(440, 1.0), tone(440, 1.3, amp=0.3, phase=1.0), tone(880, 1.0), tone(440, 1.0, sr=44100)]
    )
    assert _dist(v, 0, 2) > 5 * _dist(v, 0, 1)  # 440 vs 880 far; 440 vs quieter, longer 440 close
    assert _dist(v, 0, 3) < _dist(v, 0, 2) / 5  # resampled from 44.1 kHz: still a 440 Hz tone
    assert torch.equal(enc.encode_raw([tone(440, 1.0)]), v[:1])


def test_video_stats_separate_motion_and_direction() -> None:
    enc = create_encoder("classic/video-stats")
    static, right, left = moving_square(20, 0), moving_square(20, 1), moving_square(20, 0)
    left.frames = right.frames[:, :, ::-1].copy()  # mirrored: the square moves left
    static2 = VideoClip(np.roll(static.frames, 6, axis=2), 10.0)  # static, elsewhere in the frame
    v = enc.encode_raw([static, right, left, static2])
    assert _dist(v, 0, 1) > 5 * _dist(v, 0, 3)  # static vs moving far; two static shots close
    d = enc.DIRECTION_BINS
    direction = slice(enc.output_dim - d - 2, enc.output_dim)
    assert float((v[1, direction] - v[2, direction]).norm()) > 0.3  # right vs left
    assert v[1, -2] > 0.1 > -0.1 > v[2, -2]  # global translation u: + right, - left
    assert torch.equal(enc.encode_raw([right]), v[1:2])
