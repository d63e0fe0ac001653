#!/usr/bin/env bash
# Checks the shipped monitoring files with the real tools: the scrape config
# and alert rules with promtool (including the alert unit tests), and the
# Grafana dashboard as JSON with panels that query something. Fails (never
# skips) when a tool is missing: scripts/setup installs them.
set -euo pipefail
cd "$(dirname "$0")/../../monitoring"

for tool in promtool jq; do
  command -v "$tool" >/dev/null || {
    echo "FAIL: $tool is not installed; scripts/setup installs it (Debian packages prometheus, jq)" >&2
    exit 1
  }
done

promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml

jq -e . grafana-dashboard.json >/dev/null || { echo "FAIL: grafana-dashboard.json is not JSON" >&2; exit 1; }
# Every panel but a row has at least one query, every query has an expression,
# and the datasource is the dashboard's variable (so it imports anywhere).
jq -e '
  [.panels[] | select(.type != "row")] as $p
  | ($p | length) > 0
    and all($p[]; (.targets | length) > 0)
    and all($p[].targets[]; (.expr | length) > 0 and .datasource.uid == "${datasource}")
' grafana-dashboard.json >/dev/null || {
  echo "FAIL: grafana-dashboard.json: a panel without a query, or a query not on \${datasource}" >&2
  exit 1
}
# The panels the issue asks for.
for title in "Messages per second" "Publish to acknowledgement" "Leader" "Peer lag (leader's view)" "Catch-up traffic"; do
  jq -e --arg t "$title" 'any(.panels[]; .title == $t)' grafana-dashboard.json >/dev/null ||
    { echo "FAIL: grafana-dashboard.json has no panel \"$title\"" >&2; exit 1; }
done
# Latency percentiles come from the histograms.
grep -q 'histogram_quantile(0.99, sum by (le) (rate(ordo_publish_ack_seconds_bucket' grafana-dashboard.json ||
  { echo "FAIL: no publish latency percentile panel" >&2; exit 1; }
echo "monitoring files OK"
