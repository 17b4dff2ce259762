# The two commands of README.md. Each installs what is missing first.
.PHONY: run test bootstrap bench lint

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	.venv/bin/filmless up --demo

test: bootstrap
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: bootstrap
	.venv/bin/python benchmarks/ingest.py

lint: bootstrap
	.venv/bin/ruff check .
