"""What ``filmless demo`` leaves in a data directory that must not outlive the demo.

The demo publishes its passwords (README, banner) and trusts a development
CA and TSA that say NOT FOR CLINICAL USE. Started again without ``--demo``,
such a data directory would let anyone who read the README log in and
would accept signatures from certificates anyone can mint. So
``filmless up`` and ``filmless emr serve`` refuse to start while
:func:`demo_leftovers` finds any of it, and :func:`disable_demo`
(``filmless demo --disable``) removes it for good:

* demo accounts whose published password still works are given a random
  password nobody knows and deactivated (their sessions and tokens end);
* development CA certificates leave the trust anchors (kept aside, not
  deleted: old demo signatures can still be examined);
* the development PKI folder (its TSA is what ``filmless up`` would start)
  is renamed, and signing keys on the demo token are deactivated.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from emr.access import audit
from emr.access.audit import Actor
from emr.core.settings import EmrSettings
from emr.db import make_engine, make_session_factory

__all__ = ["DemoLeftovers", "demo_leftovers", "disable_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoLeftovers:
    accounts: list[str] = field(default_factory=list)  # demo user names whose published password works
    dev_anchors: list[Path] = field(default_factory=list)  # development CA certificates that are trusted
    dev_pki: Path | None = None  # the development PKI (CA keys, the TSA `filmless up` would start)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.dev_anchors or self.dev_pki)


def _anchors_dir(settings: EmrSettings) -> Path:
    return settings.trust_anchors_dir or settings.data_dir / "pki" / "trust-anchors"


def _dev_pki(settings: EmrSettings) -> Path:
    return settings.data_dir / "pki" / "dev"


def _published_accounts(settings: EmrSettings) -> list[str]:
    from emr.demo.seed import DEMO_ACCOUNTS
    from emr.models import User

    hasher = PasswordHasher()
    found = []
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            users = {u.username: u for u in session.scalars(
                select(User).where(User.username.in_([a[0] for a in DEMO_ACCOUNTS]), User.active.is_(True)))}
            for username, password, *_rest in DEMO_ACCOUNTS:
                user = users.get(username)
                if user is None:
                    continue
                try:
                    if hasher.verify(user.password_hash, password):
                        found.append(username)
                except (VerificationError, InvalidHashError):
                    continue
    except SQLAlchemyError:
        return []  # no EMR database (yet): no accounts at all
    finally:
        engine.dispose()
    return found


def demo_leftovers(settings: EmrSettings) -> DemoLeftovers:
    """What of the demo is still live in this data directory (empty: safe to run for real)."""
    from emr.signing import list_trust_anchors

    dev = _dev_pki(settings)
    return DemoLeftovers(
        accounts=_published_accounts(settings),
        dev_anchors=sorted({a.path for a in list_trust_anchors(_anchors_dir(settings)) if a.is_development}),
        dev_pki=dev if (dev / "ca.pem").is_file() else None,
    )


def disable_demo(settings: EmrSettings, actor: Actor) -> list[str]:
    """Remove every demo leftover (idempotent); returns one line per thing done."""
    from emr.access.users import set_active, set_password
    from emr.demo.seed import DEMO_ACCOUNTS
    from emr.demo.signing import DEMO_TOKEN_LABEL
    from emr.models import User
    from emr.models.signing import SigningKey

    done: list[str] = []
    leftovers = demo_leftovers(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            for username in leftovers.accounts:
                user = session.scalar(select(User).where(User.username == username))
                if user is None:
                    continue
                set_password(session, actor, user.id, secrets.token_urlsafe(24))  # ends sessions and tokens
                set_active(session, actor, user.id, False)
                done.append(f"account {username}: password replaced, deactivated")
            demo_users = [a[0] for a in DEMO_ACCOUNTS]
            keys = session.scalars(
                select(SigningKey).join(User, User.id == SigningKey.user_id).where(
                    SigningKey.kind == "pkcs11", SigningKey.token_label == DEMO_TOKEN_LABEL,
                    SigningKey.active.is_(True), User.username.in_(demo_users))
            ).all()
            for key in keys:
                key.active = False
                audit.record(session, actor, "signing.key_disable", object_type="user", object_id=key.user_id,
                             details={"token_label": key.token_label, "key_label": key.key_label, "why": "demo"})
                done.append(f"signing key {key.token_label}/{key.key_label}: deactivated")
            session.commit()
    except SQLAlchemyError as exc:
        log.warning("demo accounts not checked: %s", exc)
    finally:
        engine.dispose()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    if leftovers.dev_anchors:
        aside = settings.data_dir / "pki" / f"untrusted-{stamp}"
        aside.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in leftovers.dev_anchors:
            shutil.move(str(path), aside / path.name)
            done.append(f"trust anchor {path.name}: no longer trusted (kept in {aside})")
    if leftovers.dev_pki is not None:
        target = leftovers.dev_pki.with_name(f"dev.disabled-{stamp}")
        leftovers.dev_pki.rename(target)
        done.append(f"development CA and TSA: moved to {target}")
    return done
