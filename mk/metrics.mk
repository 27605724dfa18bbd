# Metrics: a real Prometheus (and promtool) for the tests of the scrape endpoint, the alert rules and the
# dashboard's queries. Debian's package, like redis-server; `make tools` installs it.

.PHONY: prometheus
prometheus: ## Install prometheus and promtool from apt when they are missing
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

.PHONY: rules
rules: prometheus ## Check and unit-test the alert rules (deploy/prometheus) with promtool
	promtool check rules deploy/prometheus/otp-step-service.rules.yml
	cd deploy/prometheus && promtool test rules otp-step-service.rules_test.yml
