#!/usr/bin/env bash
# Regenerates docs/dashboard.png, the README's screenshot of the dashboard:
# the tenant-api example on a test redis-server with some traffic, loaded in
# headless chromium (`apt-get install -y chromium`). See the ignored test
# `dashboard_screenshot` in tests/dashboard_browser.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test dashboard_browser -- --ignored --exact dashboard_screenshot
echo "wrote docs/dashboard.png"
