"""/healthz answers "ok" while the database answers, 503 otherwise; it shows nothing else."""

from __future__ import annotations

from pathlib import Path

from emr import EmrSettings, create_app, upgrade_database


def test_healthz_follows_the_database(tmp_path: Path) -> None:
    good = EmrSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/emr.sqlite3",
                       secret_key_file=tmp_path / "secret_key")
    upgrade_database(good)
    r = create_app(good).test_client().get("/healthz")
    assert r.status_code == 200 and r.get_data(as_text=True) == "ok\n"
    assert r.headers["Cache-Control"] == "no-store"

    gone = EmrSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/no-such-dir/emr.sqlite3",
                       secret_key_file=tmp_path / "secret_key")
    r = create_app(gone).test_client().get("/healthz")  # unmigrated (empty) database
    assert r.status_code == 503 and r.get_data(as_text=True) == "database unavailable\n"
