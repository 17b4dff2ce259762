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
    assert set(services) == {"postgres", "storage", "gateway", "emr", "proxy"}
    published = {str(p.get("target") if isinstance(p, dict) else p) for p in services["storage"]["ports"]}
    assert not any("8042" in p or "4242" in p for p in published), published
    assert not any("8080" in p for p in published), published  # the EMR only behind the proxy
    for name, service in services.items():
        if name != "proxy":
            ports = {str(p.get("target") if isinstance(p, dict) else p) for p in service.get("ports", [])}
            assert not any("8080" in p for p in ports), (name, ports)
    for name in ("gateway", "emr"):
        assert services[name]["network_mode"] == "service:storage"
    assert "generated-secret" in services["storage"]["environment"]["FILMLESS_ORTHANC_PG_DSN"]


def test_compose_refuses_to_run_without_a_password() -> None:
    result = _config({"FILMLESS_GATEWAY_ALLOWED": "CT01"})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_emr_sits_behind_a_buffering_tls_proxy_with_per_ip_limits() -> None:
    result = _config({"POSTGRES_PASSWORD": "generated-secret", "FILMLESS_GATEWAY_ALLOWED": "CT01@10.1.2.3"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    targets = {int(p["target"]) for p in proxy["ports"]}
    assert targets == {443, 80}
    mounts = {}
    for v in proxy["volumes"]:  # "source:target[:mode]" (compose v1) or a mapping (v2)
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else v.rsplit(":", 2)[:2]
        mounts[target] = source
    assert "/etc/nginx/tls" in mounts and "/etc/nginx/conf.d/default.conf" in mounts
    conf_path = Path(mounts["/etc/nginx/conf.d/default.conf"])
    assert conf_path.is_file()
    emr = services["emr"]["environment"]
    assert emr["FILMLESS_PUBLIC_URL"].startswith("https://")  # Secure cookies and HSTS
    assert emr["FILMLESS_EMR_TRUSTED_PROXY"]

    conf = conf_path.read_text("utf-8")
    directives = {line.split()[0]: line.strip() for line in conf.splitlines() if line.strip()
                  and not line.strip().startswith("#")}
    for name in ("ssl_certificate", "ssl_certificate_key", "client_header_timeout", "client_body_timeout",
                 "limit_conn", "limit_req", "proxy_request_buffering", "proxy_buffering"):
        assert name in directives, name
    assert directives["client_header_timeout"] == "client_header_timeout 10s;"
    assert "ssl_certificate     /etc/nginx/tls/fullchain.pem;" in conf
    assert "proxy_set_header X-Forwarded-For   $remote_addr;" in conf  # replaced, so it cannot be forged
    assert conf.count("proxy_pass http://storage:8080;") == 2
    login = conf[conf.index("location = /login"):]
    assert "limit_req zone=filmless_login" in login.split("}")[0]
    assert conf.count("{") == conf.count("}")
