"""The documents that state facts about the code say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from jupyter_celery.core.queues import PROFILES
from jupyter_celery.core.settings import ENV_PREFIX, VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def test_workers_readme_lists_each_pool_as_configured():
    text = (ROOT / "workers" / "README.md").read_text()
    for profile in PROFILES.values():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{profile.name}` |"))
        assert f"| {profile.soft_time_limit} s | {profile.time_limit} s |" in row
        mem = f"{profile.max_memory_per_child_kb // 1024} MiB" if profile.max_memory_per_child_kb else "none"
        assert row.endswith(f"| {mem} |")
        assert profile.description in row


def test_readme_starts_with_the_two_commands_and_documents_every_variable():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```")[1]
    assert "./scripts/demo" in first_block
    assert "./scripts/test" in first_block
    source = (ROOT / "jupyter_celery" / "core" / "settings.py").read_text()
    read = set(re.findall(r'(?<![.\w])get\("([A-Z_]+)"\)', source)) | {"STATE_DIR"}
    assert read <= set(VARIABLES)
    for name in VARIABLES:
        assert f"`{ENV_PREFIX}{name}`" in text, name
