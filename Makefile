# The two commands of README.md. Each installs what is missing first.
.PHONY: run test test-quick bootstrap bench lint lock

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap
	.venv/bin/filmless up --demo

# Two workers, a test file each at a time (module fixtures stay whole): most tests wait on real
# processes, so two workers use two cores. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: bootstrap
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Everything but chromium and the multi-process end-to-end tests (markers: browser, pg, slow).
test-quick: bootstrap
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not browser and not slow" $(PYTEST_ARGS)

bench: bootstrap
	.venv/bin/python benchmarks/ingest.py

lint: bootstrap
	.venv/bin/ruff check .

# Refresh requirements.lock from pyproject.toml (newest versions that fit),
# then `make test` to see that they work before committing the lock.
lock: bootstrap
	.venv/bin/python -m pip install -q --disable-pip-version-check pip-tools
	.venv/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --strip-extras \
	  --extra dev --extra codecs --no-header --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml scripts/build-requirements.in
