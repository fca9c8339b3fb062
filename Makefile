# The two commands of the README:
#   make demo   set up, then issue and deploy a certificate fully offline (Pebble + Cloudflare emulator)
#   make test   set up, then run the whole test suite (Pebble and PostgreSQL are real, never skipped in CI)

.PHONY: setup demo test bench

setup:
	./scripts/bootstrap.sh

demo: setup
	.venv/bin/certd demo

test: setup
	.venv/bin/python -m pytest

bench: setup
	for b in bench/*.py; do .venv/bin/python $$b || exit 1; done
