"""C2PA provenance: sign a rendered clip, verify it, and fail on any change."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation import ProceduralRenderer, RenderRequest
from generation.provenance import (
    ClipClaim,
    ensure_dev_credentials,
    load_credentials,
    rotate_dev_signer,
    sign_video,
    verify_video,
)

pytest.importorskip("c2pa")


def _claim(clip_id: str = "c1") -> ClipClaim:
    return ClipClaim(
        clip_id=clip_id,
        prompt_id="p1",
        creator_id="u1",
        creator_handle="maya",
        generator="procedural",
        generator_version="procedural-2",
        prompt_sha256=ClipClaim.hash_prompt("a cat dancing"),
        cameo_user_ids=("u2",),
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keys = tmp_path_factory.mktemp("keys") / "dev"
    out = tmp_path_factory.mktemp("clip")
    clip = ProceduralRenderer().generate([RenderRequest("p1", "c1", "a cat dancing", 1, "maya")], [out])[0]
    sign_video(clip.video_path, _claim(), load_credentials(keys))
    return clip.video_path, keys


def test_a_signed_clip_verifies_as_made_here_with_its_claim(signed: tuple[Path, Path]) -> None:
    video, keys = signed
    result = verify_video(video, load_credentials(keys).trust_anchors_pem)
    assert result.verdict == "made_here" and result.state == "Trusted"
    assert result.detail.startswith("made here by @maya at ")
    assert result.claim is not None
    expected = _claim()
    assert {k: v for k, v in vars(result.claim).items() if k != "created_at"} == {
        k: v for k, v in vars(expected).items() if k != "created_at"
    }


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_one_changed_byte_fails(signed: tuple[Path, Path], where: float) -> None:
    video, keys = signed
    data = bytearray(video.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    result = verify_video(bytes(data), load_credentials(keys).trust_anchors_pem)
    assert result.verdict == "unknown" and result.claim is None


def test_unsigned_foreign_and_junk_files_are_unknown(signed: tuple[Path, Path], tmp_path: Path) -> None:
    video, keys = signed
    trust = load_credentials(keys).trust_anchors_pem
    plain = ProceduralRenderer().generate([RenderRequest("p", "c", "a dog", 2, "leo")], [tmp_path / "plain"])[0]
    assert verify_video(plain.video_path, trust).detail == "unknown: the file carries no provenance manifest"
    assert verify_video(b"\x00" * 64, trust).verdict == "unknown"
    elsewhere = load_credentials(tmp_path / "someone-else").trust_anchors_pem
    assert verify_video(video, elsewhere).detail == "unknown: it is not signed by Clipstream"


def test_rotating_the_signer_keeps_old_clips_verifying(signed: tuple[Path, Path], tmp_path: Path) -> None:
    video, keys = signed
    rotated = tmp_path / "rotated"
    ensure_dev_credentials(rotated)
    before = (rotated / "signer.key").read_bytes()
    rotate_dev_signer(rotated)
    assert (rotated / "signer.key").read_bytes() != before
    assert verify_video(video, load_credentials(keys).trust_anchors_pem).verdict == "made_here"
    # A clip signed after rotation verifies with the same root.
    other = ProceduralRenderer().generate([RenderRequest("p", "c9", "a fox", 3, "zoe")], [tmp_path / "new"])[0]
    sign_video(other.video_path, _claim("c9"), load_credentials(rotated))
    assert verify_video(other.video_path, load_credentials(rotated).trust_anchors_pem).verdict == "made_here"


def test_credentials_are_all_or_nothing() -> None:
    from core.settings import ProvenanceSettings, Settings

    with pytest.raises(ValueError, match="go together"):
        Settings(provenance=ProvenanceSettings(key_file=Path("k.pem")))
    with pytest.raises(ValueError, match="PROVENANCE__"):
        Settings(environment="production", secret_key="s" * 40)
