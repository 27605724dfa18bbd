"""The Go and TypeScript snippets of the docs ("Calling from other languages") compile as they are:
copy-paste means that."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .toolchain import ROOT, require_binary, require_path, run

DOC = ROOT / "docs" / "calling.md"


def snippet(language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one {language} snippet in {DOC.name}, found {len(blocks)}"
    return str(blocks[0])


def test_the_go_snippet_builds_and_is_gofmt_clean(tmp_path: Path) -> None:
    go = require_binary("go", "install Go 1.26+ and run `make polyglot`")
    (tmp_path / "main.go").write_text(snippet("go"))
    # The example's module, with the client taken from this checkout: the go.mod the doc tells you to write.
    module = (ROOT / "examples" / "go" / "go.mod").read_text()
    module = module.replace("module otpstepservice/examples/go", "module snippet")
    module = module.replace("=> ../../client/go", f"=> {ROOT / 'client' / 'go'}")
    (tmp_path / "go.mod").write_text(module)
    shutil.copy(ROOT / "examples" / "go" / "go.sum", tmp_path / "go.sum")
    run([go, "build", "-o", str(tmp_path / "snippet"), "."], tmp_path)
    gofmt = Path(go).with_name("gofmt")
    assert run([str(gofmt) if gofmt.exists() else "gofmt", "-l", "main.go"], tmp_path) == ""


def test_the_typescript_snippet_type_checks(tmp_path: Path) -> None:
    node = require_binary("node", "install Node.js 20+ with npm and run `make polyglot`")
    modules = require_path(ROOT / "examples" / "ts" / "node_modules", "run `make polyglot` (npm ci)")
    (tmp_path / "node_modules").symlink_to(modules)
    (tmp_path / "snippet.mts").write_text(snippet("ts"))
    tsc = str(modules / "typescript" / "bin" / "tsc")
    options = ["--noEmit", "--strict", "--skipLibCheck", "--target", "ES2022"]
    run(
        [node, tsc, *options, "--module", "NodeNext", "--moduleResolution", "NodeNext", "snippet.mts"],
        tmp_path,
    )
