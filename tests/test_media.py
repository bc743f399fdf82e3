"""Media decoding: real files written in the test (PIL, soundfile, PyAV), decoded from paths and bytes."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmrec.encoders.base import AudioClip, VideoClip
from mmrec.encoders.media import (
    MediaError,
    decode,
    frame_to_rgb,
    load_audio,
    load_image,
    load_text,
    load_video,
    resample_audio,
    sample_frame_indices,
    yuv_to_rgb,
)


# ------------------------------------------------------------------------------------------ builders
def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(x: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def pyav_audio_bytes(container: str, codec: str, x: np.ndarray, sr: int) -> bytes:
    """Encode ``(channels, samples)`` float audio with PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "stereo" if x.shape[0] == 2 else "mono"
        step = stream.codec_context.frame_size or 1152
        for i in range(0, x.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[:, i : i + step]), format="fltp", layout=stream.layout.name
            )
            frame.sample_rate, frame.pts = sr, i
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


def level(i: int) -> int:
    """Grey level that encodes frame index ``i`` (survives H.264 on flat frames)."""
    return 10 + 6 * i


def mp4_bytes(n: int = 30, fps: int = 10, hw: tuple[int, int] = (48, 64)) -> bytes:
    """An H.264 / yuv420p MP4 whose frame ``i`` is flat grey ``level(i)``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = hw[0], hw[1], "yuv420p"
        for i in range(n):
            arr = np.full((*hw, 3), level(i), np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


def frame_ids(clip: VideoClip) -> list[int]:
    return [round((float(f.mean()) - 10) / 6) for f in clip.frames]


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


# -------------------------------------------------------------------------------------------- images
def test_png_and_jpeg_from_path_and_bytes(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # fully transparent -> white, not black
    rgba.paste((255, 0, 0, 255), (0, 0, 10, 10))
    rgba.save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (20, 10)
    assert img.getpixel((2, 2)) == (255, 0, 0) and img.getpixel((15, 5)) == (255, 255, 255)

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (0, 0, 255)).save(buf, "JPEG", quality=95)
    from_bytes = load_image(buf.getvalue())
    (tmp_path / "b.jpg").write_bytes(buf.getvalue())
    assert np.array_equal(np.asarray(from_bytes), np.asarray(load_image(str(tmp_path / "b.jpg"))))
    r, g, b = np.asarray(from_bytes).reshape(-1, 3).mean(0)
    assert b > 240 and r < 15 and g < 15

    grey = io.BytesIO()
    Image.new("L", (5, 5), 128).save(grey, "PNG")
    assert load_image(grey.getvalue()).getpixel((0, 0)) == (128, 128, 128)


def test_corrupt_and_missing_images(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    with pytest.raises(MediaError) as e:
        load_image(data[: len(data) // 2])
    assert e.value.reason == "corrupt image"
    with pytest.raises(MediaError) as e:
        load_image(b"definitely not an image")
    assert e.value.reason == "corrupt image"
    with pytest.raises(MediaError) as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.reason == "missing file" and "nope.jpg" in str(e.value)
    with pytest.raises(MediaError) as e:
        load_image(b"")
    assert e.value.reason == "empty file"
    with pytest.raises(MediaError) as e:
        load_image(12345)  # type: ignore[arg-type]
    assert e.value.reason == "bad source"


def test_media_error_is_a_picklable_value_error() -> None:
    err = pickle.loads(pickle.dumps(MediaError("corrupt image", "x.jpg is broken")))
    assert isinstance(err, ValueError) and err.reason == "corrupt image" and err.message == "x.jpg is broken"


# --------------------------------------------------------------------------------------------- audio
def test_wav_resampling_keeps_pitch_and_length(tmp_path: Path) -> None:
    (tmp_path / "t.wav").write_bytes(wav_bytes(tone(1000, 44100, 1.0), 44100))
    clip = load_audio(tmp_path / "t.wav", target_sr=16000)
    assert isinstance(clip, AudioClip) and clip.sample_rate == 16000
    assert clip.waveform.shape == (16000,) and clip.waveform.dtype == np.float32
    assert abs(peak_hz(clip.waveform, 16000) - 1000) <= 2
    native = load_audio(tmp_path / "t.wav")
    assert native.sample_rate == 44100 and native.waveform.shape == (44100,)
    assert resample_audio(np.zeros((2, 441)), 44100, 16000).shape == (2, 160)


def test_stereo_mixdown_and_max_seconds() -> None:
    left, right = np.full(8000, 0.5, np.float32), np.full(8000, 0.1, np.float32)
    data = wav_bytes(np.stack([left, right], axis=1), 8000, fmt="FLAC")
    mono = load_audio(data)
    assert mono.waveform.shape == (8000,) and np.allclose(mono.waveform, 0.3, atol=1e-3)
    stereo = load_audio(data, mono=False, max_seconds=0.5)
    assert stereo.waveform.shape == (2, 4000)
    assert np.allclose(stereo.waveform[0], 0.5, atol=1e-3) and np.allclose(stereo.waveform[1], 0.1, atol=1e-3)


def test_truncated_empty_and_garbage_audio(tmp_path: Path) -> None:
    data = wav_bytes(tone(440, 16000, 1.0), 16000)
    with pytest.raises(MediaError) as e:
        load_audio(data[: len(data) // 2])
    assert e.value.reason == "truncated audio"
    (tmp_path / "cut.wav").write_bytes(data[:-100])
    with pytest.raises(MediaError) as e:
        load_audio(tmp_path / "cut.wav")
    assert e.value.reason == "truncated audio"
    with pytest.raises(MediaError) as e:
        load_audio(wav_bytes(np.zeros(0, np.float32), 16000))
    assert e.value.reason == "empty audio"
    with pytest.raises(MediaError) as e:
        load_audio(b"\x00garbage" * 64)
    assert e.value.reason == "undecodable audio"
    with pytest.raises(MediaError) as e:
        load_audio(tmp_path / "missing.wav")
    assert e.value.reason == "missing file"


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mp3", "libmp3lame"), ("ipod", "aac"), ("mp4", "aac")],
    ids=["mp3", "m4a", "mp4-audio"],
)
def test_compressed_audio_through_pyav_or_libsndfile(container: str, codec: str) -> None:
    if not has_encoder(codec):
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    x = np.stack([tone(1000, 44100, 1.0), tone(1000, 44100, 1.0)])
    clip = load_audio(pyav_audio_bytes(container, codec, x, 44100), target_sr=16000)
    assert clip.sample_rate == 16000 and clip.waveform.ndim == 1
    assert 15000 <= clip.waveform.shape[0] <= 17500  # codec priming / padding adds a few ms
    assert abs(peak_hz(clip.waveform, 16000) - 1000) <= 5


# --------------------------------------------------------------------------------------------- video
def test_frame_index_sampling_rules() -> None:
    assert sample_frame_indices(30, 8).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]
    assert sample_frame_indices(3, 5).tolist() == [0, 1, 2, 2, 2]
    assert sample_frame_indices(100, 4, "dense", src_fps=30, fps=10, anchor="start").tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(100, 4, "dense", anchor="center").tolist() == [48, 49, 50, 51]
    assert sample_frame_indices(5, 8, "dense").tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="src_fps"):
        sample_frame_indices(10, 2, "dense", fps=5)
    with pytest.raises(ValueError, match="sampling"):
        sample_frame_indices(10, 2, "random")  # type: ignore[arg-type]


def test_mp4_uniform_dense_and_short_clips(tmp_path: Path) -> None:
    data = mp4_bytes(n=30, fps=10)
    (tmp_path / "v.mp4").write_bytes(data)
    clip = load_video(tmp_path / "v.mp4", num_frames=8)
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert frame_ids(clip) == [1, 5, 9, 13, 16, 20, 24, 28]
    assert clip.fps == pytest.approx(10 * 8 / 30)
    again = load_video(data, num_frames=8)  # bytes == path, and deterministic
    assert np.array_equal(again.frames, clip.frames)

    dense = load_video(data, num_frames=5, sampling="dense", fps=5, anchor="start")
    assert frame_ids(dense) == [0, 2, 4, 6, 8] and dense.fps == 5
    centre = load_video(data, num_frames=4, sampling="dense", anchor="center")
    assert frame_ids(centre) == [13, 14, 15, 16]

    short = load_video(mp4_bytes(n=3), num_frames=6)
    assert frame_ids(short) == [0, 1, 2, 2, 2, 2]
    small = load_video(data, num_frames=2, short_side=24)
    assert small.frames.shape == (2, 24, 32, 3)


def test_bad_videos_raise_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as e:
        load_video(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, num_frames=4)
    assert e.value.reason == "undecodable video"
    with pytest.raises(MediaError) as e:
        load_video(tmp_path / "missing.mp4")
    assert e.value.reason == "missing file"
    if has_encoder("aac"):
        audio_only = pyav_audio_bytes("mp4", "aac", np.zeros((1, 4096), np.float32), 16000)
        with pytest.raises(MediaError) as e:
            load_video(audio_only)
        assert e.value.reason == "no video stream"


def test_yuv_to_rgb_values_and_the_demo_writers_inverse() -> None:
    from mmrec.datamodules.synth_media import rgb_to_yuv420p

    def px(y: int, u: int, v: int, **kw: object) -> list[int]:
        one = np.full((1, 1), 0, np.uint8)
        return yuv_to_rgb(one + y, one + u, one + v, **kw)[0, 0].tolist()  # type: ignore[arg-type]

    assert px(16, 128, 128) == [0, 0, 0] and px(235, 128, 128) == [255, 255, 255]
    assert px(0, 128, 128, full_range=True) == [0, 0, 0] and px(255, 128, 128, full_range=True) == [255] * 3
    # the writer's red (82, 90, 240): BT.601 gives (255.60, 0.68, 0.19) in floats; BT.709 reads (63, 102, 240)
    # as (255.51, 0.58, -0.20)
    assert px(82, 90, 240) == [255, 1, 0]
    assert px(63, 102, 240, matrix="bt709") == [255, 1, 0]
    assert px(82, 90, 240, matrix="bt709") != px(82, 90, 240)
    # out of gamut: (-204.7, 135.6, -277.8) and (480.9, 125.3, 534.5) are clipped, never wrapped around
    assert px(0, 0, 0) == [0, 136, 0] and px(255, 255, 255) == [255, 125, 255]
    # the inverse of the demo writer's integer RGB -> yuv420p, on 2x2-constant images: within 2 levels
    blocks = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    back = yuv_to_rgb(*rgb_to_yuv420p(rgb))
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert int(np.abs(back.astype(int) - rgb).max()) <= 2


@pytest.mark.parametrize(
    ("fmt", "tol"),
    [
        ("yuv420p", 12),
        ("yuvj420p", 12),
        ("yuv422p", 8),
        ("yuv444p", 2),
        ("nv12", 12),
        ("nv21", 12),
        ("yuv420p10le", 12),
        ("gray", 0),
        ("rgb24", 0),
        ("bgr0", 0),
        ("gbrp", 0),
    ],
)
def test_frame_to_rgb_reads_every_plane_layout(fmt: str, tol: int) -> None:
    """Odd sizes (padded rows, rounded-up chroma planes); agrees with FFmpeg's converter on a smooth image
    up to chroma interpolation (swscale interpolates the subsampled chroma, we repeat it)."""
    yy, xx = np.mgrid[0:33, 0:49]
    img = np.stack([40 + 4 * xx, 30 + 5 * yy, 200 - 2 * xx - yy], -1).clip(0, 255).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
    ours = frame_to_rgb(frame)
    ref = frame.reformat(format="rgb24").to_ndarray()
    assert ours.shape == (33, 49, 3) and ours.dtype == np.uint8
    assert int(np.abs(ours.astype(int) - ref).max()) <= tol


_DECODE_SCRIPT = """
import ctypes, hashlib, re, sys
import av
from mmrec.encoders.media import load_video
if sys.argv[1] == "off":  # FFmpeg without any SIMD code path (plain C), as on a CPU without those extensions
    lib = sorted(set(re.findall(r"\\S*libavutil[^/\\s]*\\.so\\S*", open("/proc/self/maps").read())))[0]
    ctypes.CDLL(lib).av_force_cpu_flags(0)
ours, swscale = hashlib.sha256(), hashlib.sha256()
for path in sys.argv[2:]:
    ours.update(load_video(path, num_frames=6).frames.tobytes())
    ours.update(load_video(path, num_frames=3, short_side=24).frames.tobytes())
    with av.open(path) as c:
        for frame in c.decode(video=0):
            swscale.update(frame.reformat(format="rgb24").to_ndarray().tobytes())
print(ours.hexdigest(), swscale.hexdigest())
"""


def test_video_decoding_gives_the_same_bytes_with_and_without_simd(tmp_path: Path) -> None:
    """The demo's MPEG-4 clips decode to the same RGB whether FFmpeg uses its SIMD code or plain C."""
    from mmrec.datamodules.synth_media import video_frames, write_video

    paths = []
    for i, (kind, colour, pattern, motion) in enumerate(
        [
            ("skirt", "pink", "dots", "pulsing"),
            ("shoes", "blue", "stripes", "sliding"),
            ("bag", "green", "solid", "rotating"),
        ]
    ):
        paths.append(str(tmp_path / f"v{i}.mp4"))
        write_video(paths[-1], video_frames(kind, colour, pattern, motion))

    def digests(mode: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-c", _DECODE_SCRIPT, mode, *paths], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout.split()

    (ours_simd, sws_simd), (ours_c, sws_c) = digests("on"), digests("off")
    assert ours_simd == ours_c
    if sws_simd == sws_c:  # informative only: on this CPU FFmpeg's converter happens to agree with itself
        print("note: swscale gave the same RGB with and without SIMD on this CPU")


# -------------------------------------------------------------------------------------- text + dispatch
def test_text_and_decode_dispatch(tmp_path: Path) -> None:
    assert load_text("  red dress \n") == "red dress"
    assert load_text(b"caf\xc3\xa9 ") == "café"
    for empty in ("", "   \t", None, float("nan")):
        with pytest.raises(MediaError) as e:
            load_text(empty)
        assert e.value.reason == "empty text"
    with pytest.raises(MediaError) as e:
        load_text(b"\xff\xfe\xfa")
    assert e.value.reason == "undecodable text"

    (tmp_path / "t.wav").write_bytes(wav_bytes(tone(440, 8000, 0.25), 8000))
    assert decode("audio", tmp_path / "t.wav", target_sr=16000).waveform.shape == (4000,)
    assert decode("text", " hi ") == "hi"
    assert isinstance(decode("video", mp4_bytes(n=4), num_frames=2), VideoClip)
    with pytest.raises(ValueError, match="unknown modality"):
        decode("smell", b"x")
