"""Where signed artefacts come from: the signed PDF of a report, the detached CMS of a version.

Issue 5's signing workflow stores these; until it exposes them, the exports
ask an :class:`ArtifactSource` given to them (``app.extensions
["emr.signed_artifacts"]`` in the web app). :class:`NoArtifacts` answers
"none" so every export still works, just without those attachments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Document, DocumentVersion

__all__ = ["ArtifactSource", "NoArtifacts", "InMemoryArtifacts"]


class ArtifactSource(Protocol):
    def signed_pdf(self, document: Document, version: DocumentVersion) -> bytes | None:
        """The PAdES-signed PDF of this version, if there is one."""

    def version_cms(self, document: Document, version: DocumentVersion) -> bytes | None:
        """The detached CMS (DER) over the version's canonical JSON, if there is one."""


class NoArtifacts:
    def signed_pdf(self, document: Document, version: DocumentVersion) -> bytes | None:
        return None

    def version_cms(self, document: Document, version: DocumentVersion) -> bytes | None:
        return None


@dataclass
class InMemoryArtifacts:
    """Artefacts keyed by document-version id (tests, and callers that already hold the files)."""

    pdfs: Mapping[int, bytes] = field(default_factory=dict)
    cms: Mapping[int, bytes] = field(default_factory=dict)

    def signed_pdf(self, document: Document, version: DocumentVersion) -> bytes | None:
        return self.pdfs.get(version.id)

    def version_cms(self, document: Document, version: DocumentVersion) -> bytes | None:
        return self.cms.get(version.id)
