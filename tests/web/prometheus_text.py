"""A strict reader of the Prometheus text format (0.0.4) for the tests: every sample belongs
to a family declared by `# HELP` and `# TYPE` before it, names and labels are well formed,
no series twice, and each histogram has ascending `le` buckets ending at +Inf whose counts
never fall, `_count` equal to the +Inf bucket, and a `_sum`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
LABEL_RE = re.compile(LABEL)
KINDS = ("counter", "gauge", "histogram", "summary", "untyped")

Labels = tuple[tuple[str, str], ...]


@dataclass
class ParsedFamily:
    name: str
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, sample: str = "", **labels: str) -> float:
        key = (self.name + sample, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise KeyError(f"expected {key} in {self.name}, found {sorted(self.samples)}")
        return self.samples[key]

    def histogram(self, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
        """([(le, cumulative count)], sum, count) of one labelled histogram."""
        want = tuple(sorted(labels.items()))
        buckets = sorted(
            (float(dict(lab)["le"]), value)
            for (name, lab), value in self.samples.items()
            if name == self.name + "_bucket"
            and tuple(sorted((k, v) for k, v in lab if k != "le")) == want
        )
        return buckets, self.value("_sum", **labels), self.value("_count", **labels)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _number(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        raise AssertionError(f"expected a number, found {text!r}")
    return float(text)


def _family_of(name: str, families: dict[str, ParsedFamily]) -> ParsedFamily:
    if name in families and families[name].kind != "histogram":
        return families[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in families and families[base].kind == "histogram":
            return families[base]
    raise AssertionError(f"expected a # TYPE line before the sample {name}, found none")


def parse(text: str) -> dict[str, ParsedFamily]:
    assert text.endswith("\n"), "expected the exposition to end with a newline"
    families: dict[str, ParsedFamily] = {}
    helps: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and name not in helps, where
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in KINDS and name in helps and name not in families, where
            families[name] = ParsedFamily(name, kind, helps[name])
            continue
        assert not line.startswith("#") and line.strip(), f"unexpected {where}"
        match = SAMPLE.match(line)
        assert match, f"expected a sample, found {where}"
        name, labels_text, value = match.group(1), match.group(2) or "", match.group(7)
        labels = tuple(sorted((k, _unescape(v)) for k, v in LABEL_RE.findall(labels_text)))
        assert len({k for k, _ in labels}) == len(labels), f"label twice in {where}"
        family = _family_of(name, families)
        key = (name, labels)
        assert key not in family.samples, f"series twice: {where}"
        family.samples[key] = _number(value)
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: ParsedFamily) -> None:
    series = {
        tuple(sorted((k, v) for k, v in labels if k != "le"))
        for name, labels in family.samples
        if name == family.name + "_bucket"
    }
    for labels in series:
        buckets, total, count = family.histogram(**dict(labels))
        bounds = [b for b, _ in buckets]
        assert bounds and math.isinf(bounds[-1]), f"{family.name}{labels}: no +Inf bucket"
        assert bounds == sorted(set(bounds)), f"{family.name}{labels}: bounds {bounds}"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{family.name}{labels}: not cumulative {counts}"
        assert counts[-1] == count, f"{family.name}{labels}: _count {count} != +Inf {counts}"
        assert total >= 0 or count == 0, f"{family.name}{labels}: _sum {total}"
    stray = {
        name
        for name, labels in family.samples
        if name != family.name + "_bucket" and tuple(sorted(labels)) not in series
    }
    assert not stray, f"{family.name}: _sum/_count without buckets: {stray}"
