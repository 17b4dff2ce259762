"""docker-compose.yml: valid, no fixed passwords, Orthanc never published."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "docker-compose.yml"

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "FILMLESS_"))}
    full.update(env)
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_compose_file_validates_with_the_documented_env() -> None:
    result = _config({"POSTGRES_PASSWORD": "generated-secret", "FILMLESS_GATEWAY_ALLOWED": "CT01@10.1.2.3"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "storage", "gateway", "emr"}
    published = {str(p.get("target") if isinstance(p, dict) else p) for p in services["storage"]["ports"]}
    assert not any("8042" in p or "4242" in p for p in published), published
    for name in ("gateway", "emr"):
        assert services[name]["network_mode"] == "service:storage"
    assert "generated-secret" in services["storage"]["environment"]["FILMLESS_ORTHANC_PG_DSN"]


def test_compose_refuses_to_run_without_a_password() -> None:
    result = _config({"FILMLESS_GATEWAY_ALLOWED": "CT01"})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
