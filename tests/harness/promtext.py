"""The harness's one reader of Prometheus text exposition (Milvus's `/metrics`, milvus-scaler's and
segment-cache's telemetry), on `prometheus_client`'s own parser rather than line splitting: label
values with spaces, commas or escaped quotes, and `# HELP` text, are read as Prometheus reads them.
"""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

# A label filter: one value, or any of several.
LabelValue = str | tuple[str, ...]


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample of an exposition as (name as written, labels, value).

    prometheus_client names a counter's samples `<family>_total` even where the text (Milvus 2.3's
    Go client) writes `<family>`; the name here is the one in the text, so callers match what they
    see in a `/metrics` page."""
    written: set[str] | None = None  # sample names as the text writes them, read only if needed
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name == family.name + "_total":
                if written is None:
                    written = {line.split("{", 1)[0].split(" ", 1)[0]
                               for line in text.splitlines() if line and not line.startswith("#")}
                if name not in written:
                    name = family.name
            yield name, dict(sample.labels), float(sample.value)


def _matches(labels: dict[str, str], wanted: dict[str, LabelValue]) -> bool:
    for key, value in wanted.items():
        allowed = value if isinstance(value, tuple) else (value,)
        if labels.get(key) not in allowed:
            return False
    return True


def value_sum(text: str, name: str, **labels: LabelValue) -> float | None:
    """Sum of the samples of `name` whose labels match `labels`; None when there is none."""
    found = [v for n, ls, v in samples(text) if n == name and _matches(ls, labels)]
    return sum(found) if found else None


def first_value(text: str, name: str, **labels: LabelValue) -> float | None:
    """The value of the first sample of `name` whose labels match `labels`; None when there is none."""
    return next((v for n, ls, v in samples(text) if n == name and _matches(ls, labels)), None)


def fetch(url: str, timeout: float = 5.0) -> str:
    """The body of a `/metrics` URL."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()
