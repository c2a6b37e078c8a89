"""The docker compose stack and the Collector configuration: valid YAML, wired pipelines, pinned images,
health checks, and ports that agree with each other and with the docs (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR = ROOT / "collector-config.yaml"
TEMPO = ROOT / "deploy" / "tempo.yaml"
DATASOURCES = ROOT / "deploy" / "grafana" / "datasources.yaml"
DOC = ROOT / "README.md"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load(COLLECTOR)


def host_ports(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} of a compose service."""
    out = {}
    for p in service.get("ports", []):
        host, _, container = str(p).rpartition(":")
        out[int(container.split("/")[0])] = int(host)
    return out


def split_volume(spec: str) -> tuple[str, str]:
    """(source, target) of a compose volume string; the source may be ``${VAR:-default}``."""
    if spec.startswith("${"):
        end = spec.index("}") + 1
        return spec[:end], spec[end + 1 :].split(":")[0]
    src, target = spec.split(":")[:2]
    return src, target


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_files_are_valid_yaml() -> None:
    for path in (COMPOSE, COLLECTOR, TEMPO, DATASOURCES):
        assert isinstance(load(path), dict), path


def test_every_pipeline_component_is_defined_and_every_definition_used(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "traces/records"}
    for kind in ("receivers", "processors", "exporters"):
        defined = set(collector[kind])
        used = {name for p in pipelines.values() for name in p.get(kind, [])}
        assert used <= defined, f"{kind} used but not defined: {used - defined}"
        assert defined <= used, f"{kind} defined but not in any pipeline: {defined - used}"
    for p in pipelines.values():
        assert p["receivers"] and p["exporters"]
        # memory_limiter first, batch last (the Collector's recommended order)
        assert p["processors"][0] == "memory_limiter" and p["processors"][-1] == "batch"
    ext = set(collector["extensions"])
    assert set(collector["service"]["extensions"]) == ext
    storage = collector["receivers"]["otlp_json_file"]["storage"]
    assert storage in ext


def test_otlp_and_record_files_are_separate_ways_in(collector: dict[str, Any]) -> None:
    p = collector["service"]["pipelines"]
    assert p["traces"]["receivers"] == ["otlp"]
    assert p["traces/records"]["receivers"] == ["otlp_json_file"]
    assert "filter/start_records" in p["traces/records"]["processors"]
    assert "filter/start_records" not in p["traces"]["processors"]
    assert (
        set(p["traces"]["exporters"])
        == set(p["traces/records"]["exporters"])
        == {
            "otlp_grpc/jaeger",
            "otlp_grpc/tempo",
        }
    )


def test_filter_drops_exactly_our_start_records(collector: dict[str, Any]) -> None:
    from agent_otel.jsonl import reader

    conditions = collector["processors"]["filter/start_records"]["trace_conditions"]
    assert conditions == [f'span.attributes["{reader.START_RECORD}"] == true']
    attributes = pytest.importorskip("agent_otel.attributes")
    assert attributes.START_RECORD == reader.START_RECORD


def test_record_receiver_reads_the_mounted_directory(
    compose: dict[str, Any], collector: dict[str, Any]
) -> None:
    svc = compose["services"]["otel-collector"]
    mounts = {split_volume(v)[1]: split_volume(v)[0] for v in svc["volumes"]}
    assert "/records" in mounts
    for pattern in collector["receivers"]["otlp_json_file"]["include"]:
        assert pattern.startswith("/records/") and pattern.endswith(".jsonl")
    # opt-in: by default an empty directory is mounted, so nothing is tailed
    default = re.fullmatch(r"\$\{AGENT_OTEL_RECORDS_DIR:-(.+)\}", mounts["/records"])
    assert default, mounts["/records"]
    empty = ROOT / default.group(1)
    assert empty.is_dir() and not list(empty.rglob("*.jsonl"))
    storage_dir = collector["extensions"]["file_storage"]["directory"]
    assert storage_dir in mounts


def test_ports_agree(compose: dict[str, Any], collector: dict[str, Any]) -> None:
    services = compose["services"]
    col = host_ports(services["otel-collector"])
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert port_of(protocols["grpc"]["endpoint"]) == 4317 and col[4317] == 4317
    assert port_of(protocols["http"]["endpoint"]) == 4318 and col[4318] == 4318
    assert col[port_of(collector["extensions"]["health_check"]["endpoint"])] == 13133
    assert host_ports(services["jaeger"])[16686] == 16686
    assert host_ports(services["grafana"])[3000] == 3000
    tempo = load(TEMPO)
    tempo_http = tempo["server"]["http_listen_port"]
    assert host_ports(services["tempo"])[tempo_http] == 3200
    # exporters reach services of the compose file on the ports those services listen on
    exporters = collector["exporters"]
    jaeger_host, jaeger_port = exporters["otlp_grpc/jaeger"]["endpoint"].split(":")
    tempo_host, tempo_port = exporters["otlp_grpc/tempo"]["endpoint"].split(":")
    assert jaeger_host in services and tempo_host in services
    assert int(jaeger_port) == 4317  # Jaeger v2's built-in OTLP gRPC receiver
    assert port_of(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == int(
        tempo_port
    )
    # the Jaeger/Tempo OTLP ports are not published (they would clash with the Collector's)
    assert 4317 not in host_ports(services["jaeger"]) and 4317 not in host_ports(services["tempo"])
    all_host = [h for s in services.values() for h in host_ports(s).values()]
    assert len(all_host) == len(set(all_host))


def test_images_pinned_and_health_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"otel-collector", "jaeger", "tempo", "grafana"} <= set(services)
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin an exact version, not {image!r}"
        if svc.get("restart") != "no":
            hc = svc.get("healthcheck")
            assert hc and hc["test"] and hc.get("interval"), f"{name} has no health check"
    declared = set(compose.get("volumes", {}))
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src = split_volume(v)[0]
            if src.startswith(("./", "${")):
                path = re.sub(r"\$\{[A-Z_]+:-(.+)\}", r"\1", src)
                assert (ROOT / path).exists(), f"{name}: {path} missing"
            else:
                assert src in declared, f"{name}: volume {src} not declared"
        for dep in svc.get("depends_on", {}):
            assert dep in services


def test_grafana_provisions_tempo(compose: dict[str, Any]) -> None:
    ds = load(DATASOURCES)
    by_type = {d["type"]: d for d in ds["datasources"]}
    assert by_type["tempo"]["url"] == "http://tempo:3200" and by_type["tempo"]["isDefault"] is True
    assert by_type["jaeger"]["url"] == "http://jaeger:16686"
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(
        m.startswith("./deploy/grafana/datasources.yaml:/etc/grafana/provisioning/datasources/")
        for m in mounts
    )


def test_docs_match_the_stack(compose: dict[str, Any]) -> None:
    text = DOC.read_text()
    for svc in compose["services"].values():
        for host in host_ports(svc).values():
            assert f"{host}" in text, f"port {host} not in {DOC.name}"
    assert "docker compose up -d" in text
    assert "http://localhost:16686" in text and "http://localhost:3000" in text
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317" in text
    assert "AGENT_OTEL_RECORDS_DIR" in text and "twice" in text
    for cmd in ("agent-otel view", "agent-otel stats", "agent-otel tail", "agent-otel export"):
        assert cmd in text
