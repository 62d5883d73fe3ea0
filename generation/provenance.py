"""Provenance: every clip carries a signed C2PA manifest, embedded in its MP4.

The visible watermark travels with the pixels; the manifest says, verifiably, that
the file was made here, by whom, with which model, and that not one byte changed
since (C2PA binds the signature to a hash of the whole file). It is written with
``c2pa-python`` (the C2PA reference implementation), signed with an ES256 key whose
certificate chains to Clipstream's own root; a verifier that trusts that root
answers "made here by @x at T", and anything else ("unknown") for unsigned files,
files signed by others, and files changed after signing.

On the embedded default a development root and signer are created on first use
under ``PROVENANCE__DIR``. In production the operator supplies a signer
certificate chain and key (``PROVENANCE__CERT_CHAIN_FILE``/``KEY_FILE``) and the
roots to trust (``PROVENANCE__TRUST_ANCHORS_FILE``); see docs/operations.md for
rotation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

CLAIM_LABEL = "com.clipstream.clip"
#: IPTC digital source type for media made by a generative model.
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CA_CERT, CA_KEY, SIGNER_CHAIN, SIGNER_KEY = "root.pem", "root.key", "signer-chain.pem", "signer.key"


class ProvenanceError(Exception):
    """Signing failed (bad credentials, unreadable file); the clip must not go out unsigned."""


@dataclass(frozen=True)
class ClipClaim:
    """What the manifest asserts about a clip (the `com.clipstream.clip` assertion)."""

    clip_id: str
    prompt_id: str
    creator_id: str
    creator_handle: str
    generator: str
    generator_version: str
    prompt_sha256: str  # the prompt itself is not published in the file
    cameo_user_ids: tuple[str, ...] = ()
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @staticmethod
    def hash_prompt(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    cert_chain_pem: bytes  # signer certificate first, then intermediates and root
    key_pem: bytes
    trust_anchors_pem: bytes  # roots whose signatures count as "made here"


@dataclass(frozen=True)
class Verification:
    verdict: Literal["made_here", "unknown"]
    detail: str
    claim: ClipClaim | None = None
    state: str | None = None  # the C2PA validation state: Trusted, Valid, Invalid
    problems: tuple[str, ...] = ()


# --- credentials ------------------------------------------------------------------------------------------------


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clipstream (development)"),
        ]
    )


def _key_usage(*, signer: bool) -> Any:
    """A signer signs content; a root signs certificates (and revocation lists)."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signer,
        crl_sign=not signer,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def issue_signer(ca_cert_pem: bytes, ca_key_pem: bytes, days: int = 365) -> tuple[bytes, bytes]:
    """A new ES256 signer certificate under the given root: (chain PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = _key_usage(signer=True)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Clipstream signer {now:%Y-%m-%d %H:%M:%S}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM) + ca_cert_pem, _pem_key(key)


def _new_root() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = _key_usage(signer=False)
    name = _name("Clipstream development root")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def ensure_dev_credentials(directory: Path) -> Path:
    """Create a development root and signer in ``directory`` unless they exist.

    Safe when several processes start at once: everything is written to a fresh
    folder that is renamed into place, and the first rename wins."""
    directory = Path(directory)
    if (directory / SIGNER_KEY).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        root_pem, root_key = _new_root()
        chain, key = issue_signer(root_pem, root_key)
        for name, data in ((CA_CERT, root_pem), (CA_KEY, root_key), (SIGNER_CHAIN, chain), (SIGNER_KEY, key)):
            (staging / name).write_bytes(data)
        for name in (CA_KEY, SIGNER_KEY):
            os.chmod(staging / name, 0o600)
        try:
            os.rename(staging, directory)
        except OSError:
            if not (directory / SIGNER_KEY).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def rotate_dev_signer(directory: Path) -> Path:
    """Issue a new signer under the same root (old clips keep verifying)."""
    chain, key = issue_signer((directory / CA_CERT).read_bytes(), (directory / CA_KEY).read_bytes())
    for name, data in ((SIGNER_CHAIN, chain), (SIGNER_KEY, key)):
        tmp = directory / f".{name}.new"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, directory / name)
    return directory


def load_credentials(
    directory: Path,
    cert_chain_file: Path | None = None,
    key_file: Path | None = None,
    trust_anchors_file: Path | None = None,
) -> Credentials:
    """Operator-supplied files where given, the development ones in ``directory`` otherwise."""
    if cert_chain_file is None or key_file is None or trust_anchors_file is None:
        ensure_dev_credentials(directory)
    return Credentials(
        cert_chain_pem=Path(cert_chain_file or directory / SIGNER_CHAIN).read_bytes(),
        key_pem=Path(key_file or directory / SIGNER_KEY).read_bytes(),
        trust_anchors_pem=Path(trust_anchors_file or directory / CA_CERT).read_bytes(),
    )


def credentials_from(settings: Any) -> Credentials:
    """The credentials a :class:`core.settings.Settings` names (development ones by default)."""
    p = settings.provenance
    return load_credentials(p.dir, p.cert_chain_file, p.key_file, p.trust_anchors_file)


# --- signing and verifying --------------------------------------------------------------------------------------


def _manifest(claim: ClipClaim) -> str:
    return json.dumps(
        {
            "claim_generator_info": [{"name": "clipstream", "version": "0.1.0"}],
            "title": f"Clipstream clip {claim.clip_id}",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": {"name": claim.generator, "version": claim.generator_version},
                            }
                        ]
                    },
                },
                {"label": CLAIM_LABEL, "data": {**asdict(claim), "cameo_user_ids": list(claim.cameo_user_ids)}},
            ],
        }
    )


def sign_video(path: Path, claim: ClipClaim, credentials: Credentials) -> None:
    """Embed a signed manifest into the MP4 at ``path`` (replaced atomically)."""
    import c2pa

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.signing")
    try:
        info = c2pa.C2paSignerInfo(
            alg=c2pa.C2paSigningAlg.ES256,
            sign_cert=credentials.cert_chain_pem,
            private_key=credentials.key_pem,
            ta_url=None,
        )
        signer = c2pa.Signer.from_info(info)
        builder = c2pa.Builder(_manifest(claim))
        with open(path, "rb") as src, open(tmp, "w+b") as dst:
            builder.sign(signer, "video/mp4", src, dst)
        os.replace(tmp, path)
    except Exception as e:
        raise ProvenanceError(f"could not sign clip {claim.clip_id}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def verify_video(source: bytes | BinaryIO | Path, trust_anchors_pem: bytes) -> Verification:
    """Was this MP4 made here, unchanged? Never raises for bad input: it answers "unknown"."""
    import c2pa

    if isinstance(source, Path):
        source = source.read_bytes()
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    trust = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchors_pem.decode()}}
    context = c2pa.Context.from_dict(trust)
    try:
        reader = c2pa.Reader("video/mp4", stream, context=context)
        state = reader.get_validation_state()
        report = json.loads(reader.json())
    except Exception as e:  # noqa: BLE001 — unsigned, not an MP4, or damaged beyond reading
        text = str(e)
        if "ManifestNotFound" in text or "JUMBF" in text:
            reason = "the file carries no provenance manifest"
        else:
            reason = f"the file could not be read as an MP4 with a manifest ({text[:200]})"
        return Verification("unknown", f"unknown: {reason}")
    problems = tuple(
        f"{s.get('code')}: {s.get('explanation', '')}".strip() for s in report.get("validation_status") or []
    )
    manifest = (report.get("manifests") or {}).get(report.get("active_manifest") or "", {})
    data = next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") == CLAIM_LABEL), None)
    claim = None
    if isinstance(data, dict):
        try:
            claim = ClipClaim(**{**data, "cameo_user_ids": tuple(data.get("cameo_user_ids", []))})
        except TypeError:
            claim = None
    if state != "Trusted":
        why = "the file was changed after it was signed" if state == "Invalid" else "it is not signed by Clipstream"
        return Verification("unknown", f"unknown: {why}", claim=None, state=state, problems=problems)
    if claim is None:
        return Verification("unknown", "unknown: signed here but without a clip claim", state=state, problems=problems)
    return Verification(
        "made_here",
        f"made here by @{claim.creator_handle} at {claim.created_at}",
        claim=claim,
        state=state,
        problems=problems,
    )
