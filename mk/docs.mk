# The docs site (mkdocs-material, mkdocs.yml): built with --strict by the tests (tests/docs), so a broken link,
# a page missing from the nav or a stale generated reference page fails `make test`.
export NO_MKDOCS_2_WARNING := 1

.PHONY: docs-reference
docs-reference: $(STAMP) ## Regenerate the reference pages from the code (docs/reference/)
	$(PY) scripts/gen_reference.py

.PHONY: docs
docs: $(STAMP) ## Build the docs site strictly into site/
	$(VENV)/bin/mkdocs build --strict --quiet

.PHONY: docs-serve
docs-serve: $(STAMP) ## Preview the docs site on http://127.0.0.1:8000
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000
