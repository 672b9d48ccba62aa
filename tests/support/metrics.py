"""The service's /metrics text as a test reads it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]  # name, labels, value


def metric_samples(text: str) -> tuple[dict[str, str], list[Sample]]:
    """(type by family name, every sample) of a /metrics text."""
    types, samples = {}, []
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples += [(s.name, s.labels, s.value) for s in family.samples]
    return types, samples


def counted(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    _, samples = metric_samples(text)
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )
