# `make conformance`: the emulator's conformance suite (README, "Checking against a real pool"). Kept in its own fragment so the
# main Makefile changes by one include line.
CONFORMANCE_OUT  ?= var/conformance
CONFORMANCE_ARGS ?=

.PHONY: conformance
conformance: $(STAMP) ## Check the emulator's Cognito rules (CONFORMANCE_ARGS for a real pool; README)
	$(PY) -m cognito_emulator.conformance --out $(CONFORMANCE_OUT) $(CONFORMANCE_ARGS)
