"""Every snippet of the docs is checked by what would run it: copy-paste must work.

- TOML: parsed, and each `[connections.*]` / `[callers.*]` table validated by the service's own models;
- JSON and YAML: parsed; Python: compiled;
- shell: `bash -n`, every `make` target exists, every `otp-step` / `otp-step-service` subcommand exists,
  every `OTP_STEP_*` variable is one the service, the client or the examples read;
- Go and TypeScript are compiled against the generated clients (tests/polyglot/test_docs.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from otp_step_service.config.callers import CallerConfig
from otp_step_service.config.connections import ConnectionConfig
from otp_step_service.config.settings import PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"])
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets(*languages: str) -> list[tuple[str, str]]:
    """(where, text) of every fenced block in one of `languages`, where = page:line."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) in languages:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [where for where, _ in cases]


TOML, SHELL = snippets("toml"), snippets("sh", "bash", "console")


@pytest.mark.parametrize(("where", "text"), TOML, ids=_ids(TOML))
def test_toml_snippets_are_valid_connection_files(where: str, text: str) -> None:
    document = tomllib.loads(text)
    assert set(document) <= {"connections", "callers"}, f"{where}: unknown tables {sorted(document)}"
    for name, table in document.get("connections", {}).items():
        ConnectionConfig.model_validate(table), name
    for name, table in document.get("callers", {}).items():
        CallerConfig.model_validate(table), name


@pytest.mark.parametrize(("where", "text"), snippets("json"), ids=_ids(snippets("json")))
def test_json_snippets_parse(where: str, text: str) -> None:
    json.loads(text)


@pytest.mark.parametrize(("where", "text"), snippets("yaml", "yml"), ids=_ids(snippets("yaml", "yml")))
def test_yaml_snippets_parse(where: str, text: str) -> None:
    assert yaml.safe_load(text) is not None, where


@pytest.mark.parametrize(("where", "text"), snippets("python"), ids=_ids(snippets("python")))
def test_python_snippets_compile(where: str, text: str) -> None:
    compile(text, where, "exec")


@pytest.mark.parametrize(("where", "text"), SHELL, ids=_ids(SHELL))
def test_shell_snippets_are_valid_shell(where: str, text: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"{where}: {checked.stderr}"


def _make_targets() -> set[str]:
    targets = set()
    for makefile in [ROOT / "Makefile", *ROOT.glob("mk/*.mk")]:
        targets |= set(re.findall(r"^([a-z][\w-]*):", makefile.read_text(), re.MULTILINE))
    return targets


def _subcommands(source: Path) -> set[str]:
    """The subcommands an argparse CLI defines: add_parser("x"), or a loop over a tuple of names."""
    text = source.read_text()
    names = set(re.findall(r"add_parser\(\s*\"([\w-]+)\"", text))
    for group in re.findall(r"for name in \(([^)]*)\):\n\s+\w+ = sub\.add_parser\(name", text):
        names |= set(re.findall(r"\"([\w-]+)\"", group))
    return names


def test_every_make_target_the_docs_name_exists() -> None:
    targets = _make_targets()
    named = {
        (where, t)
        for where, text in SHELL
        for t in re.findall(r"(?:^|[;&|(]\s*)make ([a-z][\w-]*)", text, re.M)
    }
    missing = sorted(f"{where}: make {target}" for where, target in named if target not in targets)
    assert not missing, missing


def test_every_cli_subcommand_the_docs_name_exists() -> None:
    client = _subcommands(ROOT / "client" / "otp-step-client" / "src" / "otp_step_client" / "cli.py")
    service = _subcommands(
        ROOT / "server" / "otp-step-service" / "src" / "otp_step_service" / "app" / "cli.py"
    )
    missing = []
    for where, text in SHELL:
        for tool, sub in re.findall(r"\b(otp-step|otp-step-service) (?:--?\S+ \S+ )*([a-z][\w-]*)", text):
            known = client if tool == "otp-step" else service
            if sub not in known:
                missing.append(f"{where}: {tool} {sub}")
    assert not missing, missing


def test_every_variable_the_docs_name_is_read_by_something() -> None:
    settings = {
        (info.validation_alias if isinstance(info.validation_alias, str) else f"{PREFIX}{name.upper()}")
        for name, info in ServiceSettings.model_fields.items()
    }
    readers = [*ROOT.glob("client/otp-step-client/src/**/*.py"), *ROOT.glob("examples/*/*.go")]
    readers += [*ROOT.glob("examples/ts/src/*.ts"), *ROOT.glob("examples/java/src/**/*.java")]
    readers += [
        *ROOT.glob("server/otp-step-service/src/**/*.py"),
        ROOT / "tests" / "polyglot" / "test_compatibility.py",
    ]
    # The configuration page shows what a misspelled variable gets: a warning naming the one it probably means.
    read = (
        {"OTP_STEP_MAX_CONCURENT_STEPS"}
        | settings
        | {name for path in readers for name in re.findall(r"OTP_STEP_[A-Z0-9_]+", path.read_text())}
    )
    missing = sorted(
        {
            f"{page.relative_to(ROOT)}: {name}"
            for page in PAGES
            for name in re.findall(r"\bOTP_STEP_[A-Z0-9_]*[A-Z0-9]\b", page.read_text())
            if name not in read
        }
    )
    assert not missing, missing
