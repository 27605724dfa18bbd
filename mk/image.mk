# The container image and the Helm chart: podman (with runc) and mmdebstrap from Debian's packages, helm and
# the manifest checker built from the Go module proxy. Included by the main Makefile; `make test` depends on
# `image` and `chart-tools`. See docs/deploying.md.
#
# Podman runs with the repository's own containers.conf (runc, cgroupfs, no default ulimits, host network):
# CONTAINERS_CONF replaces the machine's settings for every podman this Makefile and the tests start, and
# /etc is never edited.

HELM_VERSION    := v3.21.4
IMAGE_NAME      := localhost/otp-step-service
IMAGE_VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' server/otp-step-service/pyproject.toml)
IMAGE_REVISION  := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE_SOURCE    ?= $(shell git remote get-url origin 2>/dev/null || echo unknown)
IMAGE_CACHE     := .cache/image
export CONTAINERS_CONF := $(CURDIR)/deploy/podman/containers.conf
PODMAN          := podman
# The CA bundle the builder trusts to reach the package index (a build secret, in no layer): the machine's
# own, which on these machines includes the egress proxy's CA.
BUILD_CA        ?= $(or $(SSL_CERT_FILE),/etc/ssl/certs/ca-certificates.crt)

# The base: Debian 12's python3, ca-certificates and libstdc++ (grpcio's extension needs it) in an `essential` rootfs (no apt), merged-/usr by
# mmdebstrap's hook (so usrmerge and the perl it needs stay out), without recommends, docs, man pages,
# locales, or iconv modules (copyright files kept). Its tag is the recipe's hash, so a
# changed recipe makes a new base and an unchanged one is never rebuilt.
BASE_SUITE      := bookworm
BASE_MIRRORS    := "deb http://deb.debian.org/debian $(BASE_SUITE) main" \
                   "deb http://deb.debian.org/debian $(BASE_SUITE)-updates main" \
                   "deb http://deb.debian.org/debian-security $(BASE_SUITE)-security main"
BASE_RECIPE     := mmdebstrap --format=tar --variant=essential --include=usr-is-merged,python3,ca-certificates,libstdc++6 \
                   --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --aptopt='Acquire::Languages "none"' \
                   --aptopt='APT::Install-Recommends "false"' \
                   --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
                   --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
                   --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
                   --customize-hook='rm -rf "$$1"/var/cache/* "$$1"/var/lib/apt/lists/* "$$1"/var/log/*' \
                   $(BASE_SUITE)
BASE_TAG        := $(BASE_SUITE)-$(shell echo '$(BASE_RECIPE) $(BASE_MIRRORS)' | sha1sum | cut -c1-10)
BASE_IMAGE      := localhost/otp-step-base:$(BASE_TAG)
UV_IMAGE        := localhost/otp-step-uv:$(UV_VERSION)

.PHONY: podman
podman: ## Install podman, runc and mmdebstrap from apt when they are missing
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap >/dev/null; }

# The rootfs tarball is kept under .cache/ so a wiped podman store re-imports it instead of bootstrapping.
$(IMAGE_CACHE)/base-$(BASE_TAG).tar: | podman
	mkdir -p $(IMAGE_CACHE)
	$(BASE_RECIPE) $@.part $(BASE_MIRRORS)
	mv $@.part $@

.PHONY: image-base
image-base: $(IMAGE_CACHE)/base-$(BASE_TAG).tar | podman ## The base image (mmdebstrap + podman import), once per recipe
	@$(PODMAN) image exists $(BASE_IMAGE) || \
	  $(PODMAN) import --change 'CMD ["/usr/bin/python3"]' $< $(BASE_IMAGE) >/dev/null
	@# uv's own image is /uv and /uvx at the root; this is that, made from the pinned uv in .bin/.
	@$(PODMAN) image exists $(UV_IMAGE) || { \
	  tmp=$$(mktemp -d) && cp -L $(UV) $$tmp/uv && tar -C $$tmp -cf $$tmp/uv.tar uv && \
	  $(PODMAN) import $$tmp/uv.tar $(UV_IMAGE) >/dev/null; rm -rf $$tmp; }

.PHONY: image
image: image-base | $(UV) ## Build localhost/otp-step-service:<version> and :latest, and its SBOM beside it
	$(PODMAN) build --format docker --network host --layers \
	  --secret id=build-ca,src=$(BUILD_CA) --build-arg BASE=$(BASE_IMAGE) --build-arg UV_IMAGE=$(UV_IMAGE) \
	  --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) --build-arg SOURCE=$(IMAGE_SOURCE) \
	  -t $(IMAGE_NAME):$(IMAGE_VERSION) -t $(IMAGE_NAME):latest -f Containerfile .
	@mkdir -p $(IMAGE_CACHE)/sbom
	@$(PODMAN) run --rm --no-healthcheck --entrypoint /usr/bin/python3 $(IMAGE_NAME):$(IMAGE_VERSION) -c \
	  'import sys; sys.stdout.write(open("/app/sbom.cdx.json").read())' > $(IMAGE_CACHE)/sbom/otp-step-service-$(IMAGE_VERSION).cdx.json
	@echo "$(IMAGE_NAME):$(IMAGE_VERSION): $$($(PODMAN) image inspect --format '{{.Size}}' $(IMAGE_NAME):$(IMAGE_VERSION) | awk '{printf "%.0f MB", $$1/1e6}'); SBOM $(IMAGE_CACHE)/sbom/otp-step-service-$(IMAGE_VERSION).cdx.json"

# ---------------------------------------------------------------------------------------------------------
# The chart
$(BIN)/helm:
	GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# Strict decoding of rendered manifests against the Kubernetes API types (k8s.io/api, pinned by its go.mod).
$(BIN)/manifest-check: tools/manifest-check/go.mod tools/manifest-check/go.sum tools/manifest-check/main.go
	mkdir -p $(BIN)
	cd tools/manifest-check && go build -o $(BIN)/manifest-check .

.PHONY: chart-tools
chart-tools: $(BIN)/helm $(BIN)/manifest-check ## Install helm (pinned) and build the manifest checker into .bin/

.PHONY: deploy-test
deploy-test: $(STAMP) image chart-tools ## The image and chart tests only (tests/deploy)
	PATH=$(BIN):$$PATH $(PY) -m pytest tests/deploy $(PYTEST_ARGS)
