"""End-to-end checks on the files the procedural backend writes."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from generation import GenerationError, ProceduralRenderer, RenderedClip, RenderRequest
from generation.encoding import sample_frame_indices, sha256_file

REQUEST = RenderRequest(
    prompt_id="p-1",
    clip_id="clip-1",
    prompt="a cat dancing on the beach at sunset",
    seed=42,
    creator_handle="alice",
)


@pytest.fixture(scope="module")
def renderer() -> ProceduralRenderer:
    return ProceduralRenderer()


@pytest.fixture(scope="module")
def clip(renderer: ProceduralRenderer, tmp_path_factory: pytest.TempPathFactory) -> RenderedClip:
    out_dir = tmp_path_factory.mktemp("clip")
    [result] = renderer.generate([REQUEST], [out_dir])
    return result


def test_mp4_is_browser_playable_h264(clip: RenderedClip) -> None:
    with av.open(str(clip.video_path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (288, 512)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12
        decoded = list(container.decode(stream))
    assert len(decoded) == 12 * 3 == clip.frame_count
    assert decoded[0].format.name == "yuv420p"
    assert (decoded[0].width, decoded[0].height) == (288, 512)


def test_mp4_has_faststart_moov_before_mdat(clip: RenderedClip) -> None:
    data = clip.video_path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_rendered_clip_metadata(clip: RenderedClip) -> None:
    out_dir = clip.video_path.parent
    assert clip.clip_id == "clip-1"
    assert clip.video_path == out_dir / "clip.mp4"
    assert clip.poster_path == out_dir / "poster.jpg"
    assert (clip.width, clip.height, clip.fps, clip.frame_count) == (288, 512, 12, 36)
    assert clip.duration_s == pytest.approx(3.0)
    assert clip.mime_type == "video/mp4"
    assert clip.generator == "procedural"
    assert clip.generator_version == "procedural-2"
    assert clip.video_sha256 == sha256_file(clip.video_path)
    assert clip.concepts == ("cat", "dancing", "beach", "sunset")
    with Image.open(clip.poster_path) as poster:
        assert poster.format == "JPEG"
        assert poster.size == (288, 512)


def test_sampled_frames_cover_every_second_and_both_ends(clip: RenderedClip) -> None:
    assert clip.frame_indices[0] == 0
    assert clip.frame_indices[-1] == clip.frame_count - 1
    assert list(clip.frame_indices) == sorted(set(clip.frame_indices))
    for second in range(3):
        assert any(second * 12 <= i < (second + 1) * 12 for i in clip.frame_indices)
    assert len(clip.frame_paths) == len(clip.frame_indices)
    for n, path in enumerate(clip.frame_paths):
        assert path == clip.video_path.parent / "frames" / f"{n:03d}.jpg"
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (288, 512)


@given(fps=st.integers(12, 24), frames=st.integers(1, 200))
def test_sample_frame_indices_properties(fps: int, frames: int) -> None:
    indices = sample_frame_indices(frames, fps)
    assert indices[0] == 0 and indices[-1] == frames - 1
    assert list(indices) == sorted(set(indices))
    assert all(0 <= i < frames for i in indices)
    for start in range(0, frames, fps):
        assert any(start <= i < start + fps for i in indices)


def test_mp4_bytes_are_reproducible(renderer: ProceduralRenderer, clip: RenderedClip, tmp_path: Path) -> None:
    [again] = renderer.generate([REQUEST], [tmp_path / "again"])
    assert again.video_sha256 == clip.video_sha256


def test_generate_handles_a_batch_in_order(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    requests = [
        RenderRequest("p-2", "clip-a", "a robot in space", 1, "bob"),
        RenderRequest("p-3", "clip-b", "a fox in the forest", 2, "carol"),
    ]
    out_dirs = [tmp_path / "a", tmp_path / "b"]
    clips = renderer.generate(requests, out_dirs)
    assert [c.clip_id for c in clips] == ["clip-a", "clip-b"]
    assert [c.video_path.parent for c in clips] == out_dirs
    assert clips[0].video_sha256 != clips[1].video_sha256


def test_generate_failure_names_the_clip(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    bad = RenderRequest("p-4", "clip-broken", "a cat", 1, "dave")
    with pytest.raises(GenerationError, match="clip-broken"):
        renderer.generate([bad], [blocker])

    wrong_seed = RenderRequest("p-5", "clip-bad-seed", "a cat", "seven", "dave")  # type: ignore[arg-type]
    with pytest.raises(GenerationError, match="clip-bad-seed"):
        renderer.generate([wrong_seed], [tmp_path / "x"])


def test_generate_rejects_mismatched_batches(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 output directories"):
        renderer.generate([REQUEST], [tmp_path / "a", tmp_path / "b"])
