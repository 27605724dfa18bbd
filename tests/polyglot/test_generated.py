"""The Go and TypeScript clients match protos/ exactly (regenerated from buf.gen.yaml with the pinned plugins)."""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

from .toolchain import BIN, ROOT, require_binary, require_path, run

# What buf.gen.yaml writes, relative to the repository: the generated folders only, not the hand-written
# go.mod, package.json or index.ts around them.
GENERATED = (Path("client/go/stepexecutor"), Path("client/ts/src/gen"))


def files_under(base: Path) -> set[Path]:
    return {
        p.relative_to(base)
        for folder in GENERATED
        if (base / folder).is_dir()
        for p in (base / folder).rglob("*")
        if p.is_file()
    }


def test_the_go_and_typescript_clients_have_not_drifted_from_the_proto(tmp_path: Path) -> None:
    for plugin in ("protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-es"):
        # buf.gen.yaml names them by path (.bin/...), never from PATH, so the pinned ones are what run.
        require_path(BIN / plugin, "run `make polyglot-tools` (pinned in mk/polyglot.mk)")
    buf = require_binary("buf", "run `make tools`")
    # -o prefixes every plugin's out: with the template's relative plugin paths, buf runs from the root.
    run([buf, "generate", "--template", "buf.gen.yaml", "-o", str(tmp_path)], ROOT)
    generated = files_under(tmp_path)
    assert generated, f"buf generate wrote nothing under {tmp_path}"
    committed = files_under(ROOT)
    assert generated == committed, "run `make polyglot-gen` and commit the result"
    stale = sorted(str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False))
    assert not stale, f"stale generated code (run `make polyglot-gen`): {stale}"


def test_each_generator_is_pinned_to_the_runtime_its_code_is_written_for() -> None:
    """protoc-gen-go ↔ google.golang.org/protobuf, protoc-gen-es ↔ @bufbuild/protobuf (mk/polyglot.mk says so)."""
    pins = dict(re.findall(r"^(\w+_VERSION)\s*:=\s*(\S+)$", (ROOT / "mk" / "polyglot.mk").read_text(), re.M))
    for module in ("client/go", "examples/go"):
        go_mod = (ROOT / module / "go.mod").read_text()
        assert f"google.golang.org/protobuf {pins['PROTOC_GEN_GO_VERSION']}" in go_mod, module
    for package in ("client/ts", "examples/ts"):
        manifest = json.loads((ROOT / package / "package.json").read_text())
        assert manifest["dependencies"]["@bufbuild/protobuf"] == pins["PROTOC_GEN_ES_VERSION"], package
        lock = json.loads((ROOT / package / "package-lock.json").read_text())
        installed = lock["packages"]["node_modules/@bufbuild/protobuf"]["version"]
        assert installed == pins["PROTOC_GEN_ES_VERSION"], package
