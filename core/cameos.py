"""Cameos: consent-gated use of a person's likeness in other people's clips.

A user registers a likeness (a reference image) and says who may cast it: only
themselves, people they approve, mutual follows, or everyone, plus free-text
restrictions ("no political content"). A prompt casts people by writing their
@handles (at most two). Consent is checked three times:

1. when the API accepts the prompt (:func:`resolve_cast`): a refusal costs no GPU time;
2. by the moderation worker before it publishes (:func:`recheck`);
3. by the materializer as it makes the clip visible, under a lock on the likeness row,
   so a revocation racing a publication cannot leave the clip up (:func:`recheck` with
   ``lock=True``).

Any change that narrows consent (revoking, changing the mode or restrictions, removing
an approval, a block) re-checks every published clip that casts the owner and takes
down those that no longer pass (:func:`enforce_consent`): the clip leaves the feed in
the same transaction, and a ``takedown`` on ``moderation.decisions`` tells every
other consumer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from core import graph
from core.db.models import CameoApproval, Clip, Likeness, PromptCameo, User
from core.errors import NotFoundError, PermissionDeniedError
from core.handles import HANDLE_RE, MENTION, handle_skeleton
from core.outbox import enqueue
from core.records import CameoCast, ModerationDecision, SocialEvent, utcnow
from core.review import audit
from core.topics import MODERATION_DECISIONS, SOCIAL_EVENTS
from moderation.normalization import load_normalizer
from moderation.restrictions import compile_restrictions

CONSENT_MODES = ("only_me", "approved", "mutuals", "everyone")
MAX_CAST = 2
_TRAILING = ".,!?;:)]}'\"…»”’"


class CameoRefused(PermissionDeniedError):
    """A prompt casts someone without their consent; the message says whom and why."""


@dataclass(frozen=True)
class CastMember:
    user: User
    likeness: Likeness

    def record(self) -> CameoCast:
        return CameoCast(
            user_id=self.user.id,
            handle=self.user.handle,
            likeness_key=self.likeness.image_key,
            likeness_sha256=self.likeness.image_sha256,
        )


def mentions(text: str) -> list[str]:
    """@handles in a prompt, in order of appearance, each once (case-insensitive)."""
    seen: dict[str, str] = {}
    for match in MENTION.finditer(text):  # trailing punctuation is trimmed below
        name = match.group(1).rstrip(_TRAILING)
        # "@alice's" casts @alice.
        for suffix in ("'s", "’s"):
            name = name.removesuffix(suffix)
        if name and name.casefold() not in seen:
            seen[name.casefold()] = name
    return list(seen.values())


def _lookalike_owner(session: Session, name: str) -> User | None:
    folded = load_normalizer(None).clean(name)
    if not folded.isascii():
        return None
    return session.scalar(select(User).where(User.handle_skeleton == handle_skeleton(folded)))


def _find_cast_user(session: Session, name: str) -> User:
    if HANDLE_RE.fullmatch(name):
        user = session.scalar(select(User).where(User.handle_key == name.lower()))
        if user is not None:
            return user
    twin = _lookalike_owner(session, name)
    if twin is not None:
        raise CameoRefused(
            f"@{name} looks like @{twin.handle} but is not spelled the same; "
            f"write the handle exactly to cast @{twin.handle}"
        )
    raise NotFoundError(f"the prompt casts @{name}, but there is no such user")


def _friends(session: Session, a: uuid.UUID, b: uuid.UUID) -> bool:
    rel = graph.relationship(session, a, b)
    return rel.friends


def consent_problem(
    session: Session,
    owner: User,
    creator_id: uuid.UUID,
    text: str,
    *,
    likeness: Likeness | None = None,
    lock: bool = False,
) -> str | None:
    """Why ``creator_id`` may not cast ``owner`` in a prompt with ``text``; None when they may."""
    if likeness is None:
        likeness = session.get(Likeness, owner.id, with_for_update=lock)
    if likeness is None:
        return f"@{owner.handle} has not registered a cameo"
    if likeness.revoked_at is not None:
        return f"@{owner.handle} has turned off their cameo"
    if creator_id == owner.id:
        return None  # restrictions and consent modes govern other people's use
    if graph.blocked_between(session, owner.id, creator_id):
        return f"@{owner.handle} does not allow you to cast them"
    mode = likeness.consent
    if mode == "only_me":
        return f"@{owner.handle} lets only themselves appear in their cameo"
    if mode == "approved":
        approved = session.scalar(
            select(exists().where(CameoApproval.owner_id == owner.id, CameoApproval.grantee_id == creator_id))
        )
        if not approved:
            return f"@{owner.handle} has not approved you to cast them"
    elif mode == "mutuals":
        if not _friends(session, owner.id, creator_id):
            return f"@{owner.handle} lets only mutual follows cast them"
    elif mode != "everyone":  # a value the code does not know: refuse rather than guess
        return f"@{owner.handle}'s cameo settings could not be read"
    violations = compile_restrictions(likeness.restrictions).violations(text)
    if violations:
        found = "; ".join(v.as_text() for v in violations)
        return f"the prompt breaks @{owner.handle}'s cameo restrictions ({likeness.restrictions!r}): {found}"
    return None


def resolve_cast(session: Session, creator: User, text: str) -> list[CastMember]:
    """The people a prompt casts, each with consent checked; CameoRefused or
    NotFoundError with a readable reason otherwise."""
    names = mentions(text)
    if len(names) > MAX_CAST:
        listed = ", ".join("@" + n for n in names)
        raise CameoRefused(f"a prompt can cast at most {MAX_CAST} people; this one names {len(names)}: {listed}")
    cast: list[CastMember] = []
    for name in names:
        user = _find_cast_user(session, name)
        likeness = session.get(Likeness, user.id)
        problem = consent_problem(session, user, creator.id, text, likeness=likeness)
        if problem is not None:
            raise CameoRefused(problem)
        assert likeness is not None
        cast.append(CastMember(user=user, likeness=likeness))
    return cast


def record_cast(session: Session, prompt_id: uuid.UUID, creator_id: uuid.UUID, cast: Sequence[CastMember]) -> None:
    for position, member in enumerate(cast):
        session.add(PromptCameo(prompt_id=prompt_id, user_id=member.user.id, creator_id=creator_id, position=position))


def recheck(
    session: Session,
    prompt_id: uuid.UUID,
    creator_id: uuid.UUID,
    text: str,
    cameos: Sequence[CameoCast],
    *,
    lock: bool = False,
) -> list[str]:
    """Reasons the cast of an accepted prompt no longer consents (empty: all still do)."""
    problems: list[str] = []
    for cast in cameos:
        row = session.get(PromptCameo, (prompt_id, cast.user_id))
        if row is not None and row.vetoed_at is not None:
            problems.append(f"@{cast.handle} removed themselves from this clip")
            continue
        owner = session.get(User, cast.user_id)
        if owner is None:
            problems.append(f"@{cast.handle}'s account no longer exists")
            continue
        likeness = session.get(Likeness, owner.id, with_for_update=lock)
        if likeness is not None and likeness.revoked_at is None and likeness.image_sha256 != cast.likeness_sha256:
            problems.append(f"@{owner.handle} replaced their cameo image after this prompt was accepted")
            continue
        problem = consent_problem(session, owner, creator_id, text, likeness=likeness)
        if problem is not None:
            problems.append(problem)
    return problems


def cameo_casts(session: Session, prompt_id: uuid.UUID) -> list[CameoCast]:
    """The cast of a stored prompt, rebuilt from prompt_cameos (for re-checks after the fact)."""
    rows = session.execute(
        select(PromptCameo, User, Likeness)
        .join(User, User.id == PromptCameo.user_id)
        .outerjoin(Likeness, Likeness.user_id == PromptCameo.user_id)
        .where(PromptCameo.prompt_id == prompt_id)
        .order_by(PromptCameo.position)
    ).all()
    return [
        CameoCast(
            user_id=user.id,
            handle=user.handle,
            likeness_key=likeness.image_key if likeness else "",
            likeness_sha256=likeness.image_sha256 if likeness else "",
        )
        for _, user, likeness in rows
    ]


def take_down(session: Session, clip: Clip, reasons: list[str]) -> None:
    """Remove a clip (published, or still on its way) now and announce it on
    moderation.decisions, so the feed, the index and the archive all drop it."""
    if clip.status in ("removed", "blocked"):
        return
    audit(
        session,
        clip.id,
        "automatic",
        "takedown",
        reason="; ".join(reasons),
        previous_state=clip.status,
        new_state="removed",
    )
    clip.status = "removed"
    clip.block_reasons = list(reasons)
    clip.updated_at = utcnow()
    enqueue(
        session,
        MODERATION_DECISIONS,
        ModerationDecision(clip_id=clip.id, decision="takedown", decided_by="automatic", reasons=reasons),
    )


def enforce_consent(session: Session, owner_id: uuid.UUID) -> int:
    """Re-check every published clip by someone else that casts ``owner_id``; take down
    those that fail. (The owner's own clips stay: they can delete them themselves.)
    Returns how many were taken down."""
    rows = session.execute(
        select(Clip)
        .join(PromptCameo, PromptCameo.prompt_id == Clip.prompt_id)
        .where(PromptCameo.user_id == owner_id, Clip.status == "published", Clip.user_id != owner_id)
        .with_for_update(of=Clip)
    ).scalars()
    removed = 0
    for clip in list(rows):
        problems = recheck(session, clip.prompt_id, clip.user_id, clip.text, cameo_casts(session, clip.prompt_id))
        if problems:
            take_down(session, clip, ["cameo consent: " + p for p in problems])
            removed += 1
    return removed


def announce(
    session: Session, owner_id: uuid.UUID, kind: str, target: uuid.UUID | None = None, **attrs: object
) -> None:
    enqueue(
        session,
        SOCIAL_EVENTS,
        SocialEvent(user_id=owner_id, kind=kind, target_user_id=target, attributes=dict(attrs)),  # type: ignore[arg-type]
    )
