"""Parses a live daemon's /v1/metrics with real parsers (prometheus_client):
as OpenMetrics when asked for it, as the text format 0.0.4 otherwise, and
checks what every scrape must hold: each family has help text and a coord_
name, and the events counter adds up to the log's head (the daemon
started on an empty store).

Usage: check_metrics.py BASE_URL
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_004_families

base = sys.argv[1]


def scrape(accept):
    req = urllib.request.Request(base + "/v1/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("content-type", ""), r.read().decode()


# The text format 0.0.4, as promtool and curl get it.
ctype, text = scrape("text/plain;version=0.0.4;q=0.9,*/*;q=0.1")
assert ctype.startswith("text/plain; version=0.0.4"), ctype
for f in text_004_families(text):
    assert f.documentation, f"{f.name} has no help text in the text format 0.0.4"

ctype, text = scrape("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
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
