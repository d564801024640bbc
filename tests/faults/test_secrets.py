"""No secrets in tracked files: every file git tracks is scanned for keys, tokens and passwords."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from arus.config import REPO_ROOT

pytestmark = pytest.mark.faults

# What a committed secret looks like. Values built from variables ({...}, $...) are not secrets.
PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "password in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s:@'\"{}$<>]+@", re.IGNORECASE),
    "literal password or secret": re.compile(
        r"""(?ix)\b[\w.-]*(?:password|passwd|secret|api[_-]?key|token)\b["']?\s*[:=]\s*
        (?P<quote>["'])(?![{$<])(?P<value>[^"'\s{}$]{6,})(?P=quote)"""
    ),
}
# Obviously fake values that unit tests use to check that secrets are handled (and hidden).
DUMMIES = {"s3cret"}
# Files that hold secrets by nature must not be tracked at all.
SECRET_FILES = re.compile(r"(^|/)(\.env(\..+)?|.*\.(pem|key|jks|p12|pfx|keystore))$")


def scan(root: Path, files: list[str]) -> list[str]:
    findings = [f"{name}: a secret file is tracked" for name in files if SECRET_FILES.search(name)]
    for name in files:
        path = root / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="replace")
        for line_no, line in enumerate(text.splitlines(), 1):
            for kind, pattern in PATTERNS.items():
                match = pattern.search(line)
                if match and match.groupdict().get("value") not in DUMMIES:
                    findings.append(f"{name}:{line_no}: {kind}")
    return findings


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_the_scanner_finds_planted_secrets(tmp_path: Path) -> None:
    # Assembled at run time, so that this file itself holds none of them.
    planted = {
        "app.py": 'db_password = "' + "hunter2" * 2 + '"\n',
        "conf.toml": "api_key = 'sk_live_" + "0123456789abcdef'\n",
        "notes.md": "clone https://bob:" + "s3cr3tpass@example.com/repo.git\n",
        "deploy/id": "-----BEGIN OPENSSH " + "PRIVATE KEY-----\n",
        "aws.txt": "AKIA" + "ABCDEFGHIJKLMNOP\n",
        "jaas.conf": 'ScramLoginModule required username="svc" password="' + 'Pa55word!";\n',
        "certs/server.key": "x\n",
    }
    harmless = {
        "ok.py": 'password = os.environ["KAFKA_SASL_PASSWORD"]\nf\'password="{self.sasl_password}"\'\n',
        "ok.md": "KAFKA_SASL_PASSWORD=$(openssl rand -hex 16) make kafka-up-sasl\n",
    }
    for name, text in {**planted, **harmless}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = scan(tmp_path, list(planted) + list(harmless))
    assert {f.split(":")[0] for f in found} == set(planted), found


def test_no_secrets_in_tracked_files() -> None:
    files = tracked_files()
    assert len(files) > 20
    assert scan(REPO_ROOT, files) == []
