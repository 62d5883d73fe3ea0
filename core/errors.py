"""One root exception for the project, with a few meaningful subclasses.

Messages name the thing that failed; callers chain with ``raise ... from e``.
"""

from __future__ import annotations


class ClipstreamError(Exception):
    """Root of every error Clipstream raises on purpose."""


class ConfigurationError(ClipstreamError):
    """Settings are invalid or unsafe; processes crash loudly at start on this."""


class BrokerError(ClipstreamError):
    """The Kafka-protocol broker could not be started, reached or administered."""


class RecordError(ClipstreamError):
    """A message on a topic could not be decoded into its versioned record."""


class NotFoundError(ClipstreamError):
    """A requested entity does not exist (or is not visible to the caller)."""


class ConflictError(ClipstreamError):
    """A write conflicts with existing state (for example a taken @handle)."""


class PermissionDeniedError(ClipstreamError):
    """The caller is authenticated but may not do this."""
