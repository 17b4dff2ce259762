"""A real EMR app on a copy of the migrated SQLite template, for module-scoped fixtures (many logins)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flask import Flask

from emr import EmrSettings, create_app
from emr.access.login_guard import LoginGuard
from emr.db import make_engine, make_session_factory

__all__ = ["sqlite_app"]


def sqlite_app(tmp: Path, template: Path, **settings: Any) -> tuple[EmrSettings, Any, Flask, Any]:
    """(settings, engine, app, session factory); login throttling off (tests log in many times)."""
    shutil.copy(template, tmp / "emr.sqlite3")
    values: dict[str, Any] = {"data_dir": tmp, "secret_key_file": tmp / "key"}
    values.update(settings, database_url=f"sqlite:///{tmp / 'emr.sqlite3'}")
    config = EmrSettings(**values)
    engine = make_engine(config.database_url)
    app = create_app(config, test_config={"TESTING": True, "EMR_ENGINE": engine})
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    return config, engine, app, make_session_factory(engine)
