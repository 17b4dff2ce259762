"""Ministry catalogues (danh mục dùng chung), each loaded file a version valid over a date range.

A catalogue kind (ICD-10, technical services, facilities, departments,
administrative units, the old-to-new unit mapping) has versions; a version
is valid from ``valid_from`` to ``valid_to`` (both inclusive, ``None`` = still
valid). Loading a new version closes the previous one the day before, so a
code is always checked against the list in force on the day of the service,
and a claim re-checked years later uses the list it was made under.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow
from .prices import Money

__all__ = ["CatalogueVersion", "CatalogueEntry"]


class CatalogueVersion(Base):
    __tablename__ = "catalogue_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # emr.catalogues.kinds.KINDS
    valid_from: Mapped[date]
    valid_to: Mapped[date | None]  # inclusive; None = in force
    source: Mapped[str] = mapped_column(String(255))  # file name, or the package and its version
    sha256: Mapped[str] = mapped_column(String(64))  # of the file: the same file is not loaded twice
    entries: Mapped[int]
    loaded_by: Mapped[str | None] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("kind", "valid_from", name="uq_catalogue_versions_kind_valid_from"),)


class CatalogueEntry(Base):
    """One line of a version. ``parent``: the province of a commune, the new commune of an old
    one (mapping); ``price``: the insurance price of a technical service (DON_GIA)."""

    __tablename__ = "catalogue_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("catalogue_versions.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(500))
    parent: Mapped[str | None] = mapped_column(String(30))
    price: Mapped[Decimal | None] = mapped_column(Money)
    folded: Mapped[str] = mapped_column(String(540))  # code + name, lower case without diacritics (search)

    __table_args__ = (
        UniqueConstraint("version_id", "code", "parent", name="uq_catalogue_entries_version_code_parent"),
        Index("ix_catalogue_entries_version_code", "version_id", "code"),
        Index("ix_catalogue_entries_version_parent", "version_id", "parent"),
    )
