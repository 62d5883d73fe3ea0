"""Text moderation as the API applies it: the rule-based term lists and the learned
classifier, together. A prompt (or comment) is blocked when either says so, and the
decision lists every reason, each saying where it came from."""

from __future__ import annotations

import dataclasses
import threading

from core.handles import strip_mentions
from moderation.harm_classifier import HarmClassifier
from moderation.prompt_policy import Action, PolicyReason, PromptDecision, PromptPolicy

#: The classifier's categories → the policy's categories, so reasons read the same.
CATEGORY = {
    "sexual": "sexual",
    "violence": "violence",
    "shocking": "violence",
    "self-harm": "self_harm",
    "hate": "hate",
    "harassment": "harassment",
    "illegal activity": "illegal_activity",
    "minors": "minors",
}
_SEVERITY = {"allow": 0, "review": 1, "block": 2}
#: The classifier learned from prompts; on a word or two it is erratic (measured: "nice"
#: 0.35, "ok" 0.45, "a purple dream" 0.26 against a 0.25 threshold), so texts under four
#: words get the term lists alone.
MIN_CLASSIFIER_WORDS = 4


class TextModerator:
    """Same interface as :class:`PromptPolicy` (``check``, ``version``)."""

    def __init__(self, policy: PromptPolicy, classifier: HarmClassifier | None = None) -> None:
        self.policy = policy
        self.classifier = classifier
        self.version = policy.version + (f"+{classifier.version}" if classifier else "")

    def warm_up(self) -> threading.Thread | None:
        """Load the sentence encoder in the background, so the first request does not wait for it."""
        if self.classifier is None:
            return None
        classifier = self.classifier
        thread = threading.Thread(target=lambda: classifier.encoder, name="encoder-warm-up", daemon=True)
        thread.start()
        return thread

    def check(self, text: str) -> PromptDecision:
        rules = self.policy.check(text)
        # A handle is a person's name, not a word the classifier knows: it reads "a person".
        plain = strip_mentions(text, "a person")
        if self.classifier is None or len(plain.split()) < MIN_CLASSIFIER_WORDS:
            return dataclasses.replace(rules, policy_version=self.version)
        harm = self.classifier.score([plain])[0]
        reasons = rules.reasons
        if harm.flagged:
            category = CATEGORY.get(harm.top_category, "violence")
            found = f"learned classifier, harm score {harm.score:.2f} (blocks at {self.classifier.threshold:.2f})"
            reasons = (*reasons, PolicyReason(category, found, "block", source="classifier"))
        action: Action = max((r.action for r in reasons), key=_SEVERITY.__getitem__, default="allow")
        return dataclasses.replace(rules, action=action, reasons=reasons, policy_version=self.version)
