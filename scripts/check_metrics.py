"""Parses a live daemon's /v1/metrics with a real OpenMetrics parser
(prometheus_client) and checks what every scrape must hold: each family
has help text and a coord_ name, and the events counter adds up to the
log's head (the daemon started on an empty store).

Usage: check_metrics.py BASE_URL
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

base = sys.argv[1]
with urllib.request.urlopen(base + "/v1/metrics", timeout=10) as r:
    ctype = r.headers.get("content-type", "")
    text = r.read().decode()
assert ctype.startswith("application/openmetrics-text"), ctype
families = list(text_string_to_metric_families(text))
assert families, "no metric families"
events = 0.0
for f in families:
    assert f.name.startswith("coord_"), f.name
    assert f.documentation, f"{f.name} has no help text"
    if f.name == "coord_events":
        events = sum(s.value for s in f.samples if s.name == "coord_events_total")
with urllib.request.urlopen(base + "/v1/status", timeout=10) as r:
    head = json.load(r)["head_seq"]
assert events == head, f"coord_events_total sums to {events}, the log's head is {head}"
print(f"metrics: {len(families)} families parsed, events counter == head ({head})")
