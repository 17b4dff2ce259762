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
    services = {name: s for name, s in config["services"].items() if not s.get("profiles")}
    assert set(services) == {"postgres", "storage", "gateway", "emr", "proxy"}
    published = {str(p.get("target") if isinstance(p, dict) else p) for p in services["storage"]["ports"]}
    assert not any("8042" in p or "4242" in p for p in published), published
    assert not any("8080" in p for p in published), published  # the EMR only behind the proxy
    for name, service in services.items():
        if name != "proxy":
            ports = {str(p.get("target") if isinstance(p, dict) else p) for p in service.get("ports", [])}
            assert not any("8080" in p for p in ports), (name, ports)
    for port in services["storage"]["ports"]:  # besides DICOM, only Grafana's, on the host's loopback
        target = int(port["target"]) if isinstance(port, dict) else int(str(port).rsplit(":", 1)[-1].split("/")[0])
        if target != 11112:
            assert target == 3000 and (port.get("host_ip") if isinstance(port, dict) else str(port)).startswith(
                "127.0.0.1"), port
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


def _mounts(service: dict) -> dict[str, str]:
    mounts = {}
    for v in service.get("volumes", []):  # "source:target[:mode]" (compose v1) or a mapping (v2)
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else v.rsplit(":", 2)[:2]
        mounts[target] = source
    return mounts


def test_monitoring_profile_scrapes_with_the_token_and_ships_a_dashboard() -> None:
    """Issue 16 §3: optional Prometheus and Grafana (profile "monitoring") with a scrape config and a dashboard
    whose queries name only metrics filmless exports."""
    import json
    import re

    result = _config({"POSTGRES_PASSWORD": "generated-secret", "FILMLESS_GATEWAY_ALLOWED": "CT01@10.1.2.3"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    monitoring = {name for name, s in services.items() if s.get("profiles")}
    assert monitoring == {"prometheus", "prometheus-init", "grafana"}
    assert all(services[name]["profiles"] == ["monitoring"] for name in monitoring)
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        assert service["network_mode"] == "service:storage"  # /metrics stays on 127.0.0.1
        assert not service.get("ports")
    assert str(prometheus["user"]).startswith("990")  # the filmless user: may read the 0600 token
    assert "--web.listen-address=127.0.0.1:9090" in prometheus["command"]
    mounts = _mounts(prometheus)
    assert mounts["/filmless"] == "data" or mounts["/filmless"].endswith("_data")
    assert any(str(v).endswith(":ro") or (isinstance(v, dict) and v.get("read_only"))
               for v in prometheus["volumes"] if "/filmless" in str(v))
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] and "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"

    scrape = yaml.safe_load(Path(_mounts(prometheus)["/etc/prometheus/prometheus.yml"]).read_text("utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert set(jobs) == {"filmless-emr", "filmless-gateway"}
    for job in jobs.values():
        assert job["authorization"] == {"type": "Bearer", "credentials_file": "/filmless/metrics-token"}
    # FILMLESS_GATEWAY_METRICS_PORT's default; the EMR's port in the storage namespace.
    assert jobs["filmless-gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:9112"]
    assert jobs["filmless-emr"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]

    dashboards = Path(_mounts(grafana)["/var/lib/grafana/dashboards"])
    provisioning = Path(_mounts(grafana)["/etc/grafana/provisioning"])
    assert yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]["url"] == (
        "http://127.0.0.1:9090")
    dashboard = json.loads((dashboards / "filmless.json").read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", m) for e in exprs for m in re.findall(r"filmless_\w+", e)}
    modules = [*(ROOT / "pacs_gateway").glob("*.py"), *(ROOT / "emr" / "ops").glob("*.py")]
    source = "".join(p.read_text("utf-8") for p in modules)
    exported = {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in re.findall(r'"(filmless_\w+)"', source)}
    assert used and used <= exported, used - exported
    assert {"filmless_gateway_instances_received", "filmless_gateway_queue_items", "filmless_emr_request_seconds",
            "filmless_emr_signing_seconds", "filmless_emr_orthanc_disk_bytes", "filmless_emr_outbox_messages"} <= used
