"""The README is the front door: its commands, settings and defaults must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from agent_otel.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "agent_otel").rglob("*.py"))


def _code_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = next(b.strip() for b in _code_blocks() if "pytest" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_main_job_is_the_demo() -> None:
    assert any(b.strip().endswith("agent-otel demo") for b in _code_blocks())


def test_every_agent_otel_setting_the_code_reads_is_documented_with_its_default() -> None:
    read = set(re.findall(r'"(AGENT_OTEL_[A-Z_]+)"', SOURCE))
    assert read, "no settings found: the pattern is stale"
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `(AGENT_OTEL_[A-Z_]+)` \| ([^|]+) \|", README, re.M)
    }
    assert read <= set(rows), f"undocumented settings: {sorted(read - set(rows))}"
    defaults = Settings()
    assert rows["AGENT_OTEL_JSONL_DIR"].strip() == f"`./{defaults.jsonl_dir}`"
    assert rows["AGENT_OTEL_CONTENT_MAX_LENGTH"].strip() == f"`{defaults.content_max_length}`"
    assert rows["AGENT_OTEL_JSONL_FSYNC"].strip() == f"`{defaults.jsonl_fsync}`"
    assert rows["AGENT_OTEL_JSONL_FSYNC_INTERVAL_MS"].strip() == f"`{defaults.jsonl_fsync_interval_ms}`"
    assert rows["AGENT_OTEL_JSONL_MAX_BYTES"].strip().startswith(f"`{defaults.jsonl_max_bytes}`")
