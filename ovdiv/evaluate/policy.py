"""Certification policies: pass/fail rules over evaluation results.

A policy file is JSON, validated against :data:`POLICY_SCHEMA`::

    {
      "name": "lines robustness gate",
      "rules": [
        {"id": "acc-lines", "dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.35},
        {"metric": "improvement", "min": 0.0},
        {"id": "beats-best", "dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.005,
         "relative_to": {"member": "best", "metric": "top1"}},
        {"metric": "top1", "member": "*", "dataset": "demo", "min": 0.5}
      ]
    }

Each rule selects result rows ``{ensemble, member, dataset, metric, value}``:

* ``metric`` (required) — a row metric name (``ensemble_top1``, ``improvement``, ``top1``, ...).
* ``dataset`` — one dataset spec; absent = every dataset in the results.
* ``ensemble`` — an ensemble name (``a+b+c``) or ``"*"``; ``member`` — a member name or ``"*"``.
  Absent both: ensemble rows when any exist for the metric, else member rows.
* ``min`` / ``max`` — inclusive bounds on the observed value (at least one is required).
* ``relative_to`` — compare ``value − baseline`` instead of ``value``. The baseline is, on the same
  dataset, ``{"member": NAME}`` (that member's row), ``{"member": "best" | "mean" | "worst"}`` (over the
  members of the rule's ensemble, or over all members for member rows), or ``{"ensemble": NAME}``;
  ``"metric"`` names the baseline metric (default: the rule's metric without an ``ensemble_`` prefix
  for member baselines, the same metric otherwise). So "ensemble top-1 on lines1.6 ≥ best member +
  0.5 pt" is ``min: 0.005`` with ``relative_to: {"member": "best", "metric": "top1"}``.
* ``require`` — ``"all"`` (default: every selected row must pass) or ``"any"`` (at least one must).
* ``bound`` — ``"lower"`` (with ``min``) or ``"upper"`` (with ``max``): the rule must also hold for that
  confidence bound of the row's interval (``ci_low`` / ``ci_high`` of ``results.json``), e.g. "ensemble
  top-1 on lines1.6 ≥ best member + 0.5 pt at 95 %" is ``{"metric": "ensemble_top1", "min": 0.005,
  "relative_to": {"member": "best", "metric": "top1"}, "bound": "lower"}``. For a relative rule the
  bound is that of the *paired* interval of the difference: ``ensemble_top1 − best member top1`` is the
  ``improvement`` row, ``− mean member top1`` the ``improvement_vs_mean`` row and ``− top1 of member
  NAME`` the ``improvement_vs_member`` row of that member (same consensus suffix);
  other differences have no stored paired interval and raise :class:`PolicyError`. A row
  without the interval (``--bootstrap 0``, an ``ovdiv-results/1`` file) fails the rule with a note.
* ``test`` — ``"mcnemar"`` with ``alpha`` (default 0.05): the row's exact one-sided McNemar p-value of
  "the ensemble beats its best member" must be below ``alpha`` (rules on ``improvement``, or on
  ``ensemble_top1`` relative to the best member's ``top1``); relative to a named member's ``top1`` (or on
  ``improvement_vs_member``) it is the test of "the ensemble beats that member".

Each check records the estimate, the interval, the p-value, ``passed_on_estimate`` (what the rule says
on the point estimate) and ``passed``; a note says when a rule passes on the estimate but not on the
bound or the test.

A rule that selects no row fails with the note "no matching results" — a gate never passes on missing
evidence. Malformed policies raise :class:`~ovdiv.errors.PolicyError` (the CLI exits 2).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.atomic import write_json
from ovdiv.errors import PolicyError
from ovdiv.evaluate.results import read_results_json

__all__ = ["POLICY_SCHEMA", "Policy", "Rule", "RuleVerdict", "Verdict", "load_result_rows"]

POLICY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["rules"],
    "properties": {
        "schema": {"enum": ["ovdiv-policy/1", "ovdiv-policy/2"]},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "rules": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["metric"],
                "anyOf": [{"required": ["min"]}, {"required": ["max"]}],
                "properties": {
                    "id": {"type": "string"},
                    "description": {"type": "string"},
                    "metric": {"type": "string", "minLength": 1},
                    "dataset": {"type": "string", "minLength": 1},
                    "ensemble": {"type": "string", "minLength": 1},
                    "member": {"type": "string", "minLength": 1},
                    "min": {"type": "number"},
                    "max": {"type": "number"},
                    "require": {"enum": ["all", "any"]},
                    "bound": {"enum": ["lower", "upper"]},
                    "test": {"enum": ["mcnemar"]},
                    "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "relative_to": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "member": {"type": "string", "minLength": 1},
                            "ensemble": {"type": "string", "minLength": 1},
                            "metric": {"type": "string", "minLength": 1},
                        },
                        "oneOf": [{"required": ["member"]}, {"required": ["ensemble"]}],
                    },
                },
            },
        },
    },
}

_AGGREGATES = {"best", "mean", "worst"}


@dataclass(frozen=True)
class Rule:
    """One policy rule (see the module docstring for the semantics of each field)."""

    id: str
    metric: str
    dataset: str | None = None
    ensemble: str | None = None
    member: str | None = None
    min: float | None = None
    max: float | None = None
    require: str = "all"
    relative_to: Mapping[str, str] | None = None
    description: str | None = None
    bound: str | None = None
    test: str | None = None
    alpha: float | None = None

    def describe(self) -> str:
        """Human-readable one-liner, e.g. ``ensemble_top1 on lines1.6 >= best member top1 + 0.005``."""
        if self.description:
            return self.description
        lhs = self.metric + (f" on {self.dataset}" if self.dataset else "")
        if self.relative_to:
            ref = self.relative_to
            who = f"member {ref['member']}" if "member" in ref else f"ensemble {ref['ensemble']}"
            lhs = f"{lhs} − {who} {_baseline_metric(self, ref)}"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        evidence = []
        if self.bound:
            evidence.append(f"at the {self.bound} confidence bound")
        if self.test:
            evidence.append(f"McNemar p < {self.alpha:g}")
        text = f"{lhs} {' and '.join(bounds)}" + (f" ({', '.join(evidence)})" if evidence else "")
        return text + (" (any)" if self.require == "any" else "")


@dataclass
class RuleVerdict:
    """Outcome of one rule on one selected row (or on no row: ``observed`` is None)."""

    rule: str
    description: str
    passed: bool
    ensemble: str | None = None
    member: str | None = None
    dataset: str | None = None
    value: float | None = None
    baseline: float | None = None
    observed: float | None = None
    min: float | None = None
    max: float | None = None
    note: str = ""
    bound: str | None = None
    test: str | None = None
    alpha: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    p_value: float | None = None
    passed_on_estimate: bool | None = None


@dataclass
class Verdict:
    """Outcome of a whole policy: ``passed`` iff every rule passed."""

    policy: str
    passed: bool
    rules: list[dict[str, Any]] = field(default_factory=list)  # per rule: id, passed, description
    checks: list[RuleVerdict] = field(default_factory=list)  # per rule x selected row

    @property
    def exit_code(self) -> int:
        """0 when the policy passed, 1 otherwise (the ``ovdiv certify`` convention)."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN values become ``null``)."""
        return {
            "schema": "ovdiv-verdict/2",
            "policy": self.policy,
            "passed": self.passed,
            "rules": self.rules,
            "checks": [{k: _json_num(v) for k, v in asdict(c).items()} for c in self.checks],
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the verdict as JSON."""
        write_json(path, self.to_dict())
        return Path(path)


def _json_num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _baseline_metric(rule: Rule, ref: Mapping[str, str]) -> str:
    if "metric" in ref:
        return ref["metric"]
    if "member" in ref and rule.metric.startswith("ensemble_"):
        return rule.metric.removeprefix("ensemble_")
    return rule.metric


class Policy:
    """A validated certification policy.

    Args:
        rules: The rules, in file order.
        name: Policy name, shown in verdicts.
    """

    def __init__(self, rules: Sequence[Rule], name: str = "policy") -> None:
        self.rules = list(rules)
        self.name = name

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "policy") -> Policy:
        """Validate ``data`` against :data:`POLICY_SCHEMA` and build the policy."""
        import jsonschema

        validator = jsonschema.Draft202012Validator(POLICY_SCHEMA)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.absolute_path) or "<root>"
            raise PolicyError(f"{source}: invalid at {where}: {_schema_message(err)}", "see `ovdiv certify --help`")
        rules = []
        seen: set[str] = set()
        for i, raw in enumerate(data["rules"]):
            rid = raw.get("id", f"rule{i + 1}")
            if rid in seen:
                raise PolicyError(f"{source}: duplicate rule id {rid!r}", "give every rule a unique id")
            seen.add(rid)
            lo, hi = raw.get("min"), raw.get("max")
            if lo is not None and hi is not None and lo > hi:
                raise PolicyError(f"{source}: rule {rid!r} has min {lo} > max {hi}")
            if "ensemble" in raw and "member" in raw:
                raise PolicyError(f"{source}: rule {rid!r} selects both an ensemble and a member", "keep one")
            ref = raw.get("relative_to")
            bound, test, alpha = raw.get("bound"), raw.get("test"), raw.get("alpha")
            if bound == "lower" and (lo is None or hi is not None):
                raise PolicyError(
                    f"{source}: rule {rid!r} has bound 'lower' but not exactly a 'min'",
                    "a lower confidence bound certifies a min; use 'upper' with 'max' (one bound per rule)",
                )
            if bound == "upper" and (hi is None or lo is not None):
                raise PolicyError(
                    f"{source}: rule {rid!r} has bound 'upper' but not exactly a 'max'",
                    "an upper confidence bound certifies a max; use 'lower' with 'min' (one bound per rule)",
                )
            if alpha is not None and test is None:
                raise PolicyError(f"{source}: rule {rid!r} has 'alpha' without 'test'", 'add "test": "mcnemar"')
            if test is not None and not _mcnemar_applies(raw["metric"], ref):
                raise PolicyError(
                    f"{source}: rule {rid!r}: the McNemar test applies to 'improvement' (ensemble vs its best "
                    f"member), not to {raw['metric']!r}",
                    'use "metric": "improvement", or "ensemble_top1" relative to {"member": "best", "metric": "top1"}',
                )
            rules.append(
                Rule(
                    id=rid,
                    metric=raw["metric"],
                    dataset=raw.get("dataset"),
                    ensemble=raw.get("ensemble"),
                    member=raw.get("member"),
                    min=None if lo is None else float(lo),
                    max=None if hi is None else float(hi),
                    require=raw.get("require", "all"),
                    relative_to=dict(ref) if ref else None,
                    description=raw.get("description"),
                    bound=bound,
                    test=test,
                    alpha=None if test is None else float(0.05 if alpha is None else alpha),
                )
            )
        return cls(rules, name=str(data.get("name", source)))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        """Read and validate a policy JSON file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PolicyError(f"policy file {p} does not exist", "pass --policy PATH to a JSON policy") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy file {p} is not valid JSON ({exc})") from exc
        policy = cls.from_dict(data, source=f"policy {p}")
        if "name" not in data:
            policy.name = p.stem
        return policy

    # ------------------------------------------------------------------ checking
    def check(self, results: Any) -> Verdict:
        """Evaluate every rule on ``results``.

        Args:
            results: An ``EvalResult`` (anything with ``.rows``), a list of row dicts, or a path to a
                ``results.json`` file or the folder holding it.

        Returns:
            The :class:`Verdict`; ``verdict.passed`` is the gate's answer.
        """
        rows = _coerce_rows(results)
        checks: list[RuleVerdict] = []
        summary: list[dict[str, Any]] = []
        for rule in self.rules:
            rule_checks = _check_rule(rule, rows)
            if rule.require == "any":
                ok = any(c.passed for c in rule_checks)
            else:
                ok = bool(rule_checks) and all(c.passed for c in rule_checks)
            checks.extend(rule_checks)
            summary.append(
                {
                    "id": rule.id,
                    "description": rule.describe(),
                    "passed": ok,
                    "rows": sum(c.value is not None for c in rule_checks),
                    "failed_rows": sum(not c.passed for c in rule_checks),
                }
            )
        return Verdict(policy=self.name, passed=all(s["passed"] for s in summary), rules=summary, checks=checks)


def _suffix(metric: str) -> str:
    """The consensus suffix of a metric name (``ensemble_top1:majority`` -> ``:majority``)."""
    return metric[metric.index(":") :] if ":" in metric else ""


def _mcnemar_applies(metric: str, ref: Mapping[str, str] | None) -> bool:
    base = metric.split(":")[0]
    if ref is None:
        return base in ("improvement", "improvement_vs_member")
    member = ref.get("member")
    return base == "ensemble_top1" and member not in (None, "mean", "worst") and ref.get("metric", "top1") == "top1"


def _difference_row(rule: Rule, row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row holding the paired interval of ``value − baseline`` of a relative rule (None: none stored)."""
    ref = rule.relative_to
    if ref is None:
        return row
    base = rule.metric.split(":")[0]
    if row["ensemble"] is None or base != "ensemble_top1" or "member" not in ref:
        return None
    if _baseline_metric(rule, ref) != "top1" or ref["member"] == "worst":
        return None
    who = ref["member"]
    if who in ("best", "mean"):
        name, member = ("improvement" if who == "best" else "improvement_vs_mean") + _suffix(rule.metric), None
    else:
        name, member = "improvement_vs_member" + _suffix(rule.metric), who
    for r in rows:
        if (r["metric"], r["dataset"], r["ensemble"], r["member"]) == (name, row["dataset"], row["ensemble"], member):
            return r
    return None


def _schema_message(err: Any) -> str:
    if err.validator == "additionalProperties":
        return f"{err.message} (check the key's spelling)"
    if err.validator == "anyOf" and err.schema_path and "min" in json.dumps(err.schema.get("anyOf", "")):
        return "a rule needs 'min' and/or 'max'"
    return str(err.message)


def load_result_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.json`` (or of the ``results.json`` inside a folder), validated loosely."""
    data, p = read_results_json(path)
    return _validate_rows(data["rows"], str(p))


def _validate_rows(rows: Iterable[Any], source: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "metric" not in row or "value" not in row:
            raise PolicyError(f"{source}: row {i} is not a {{ensemble, member, dataset, metric, value}} record")
        value = row["value"]
        rec = {
            "ensemble": row.get("ensemble"),
            "member": row.get("member"),
            "dataset": row.get("dataset"),
            "metric": row["metric"],
            "value": float("nan") if value is None else float(value),
        }
        for key in ("ci_low", "ci_high", "ci_level", "p_value"):
            v = row.get(key)
            rec[key] = None if v is None else float(v)
        rec["ci_method"] = row.get("ci_method")
        out.append(rec)
    return out


def _coerce_rows(results: Any) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        return load_result_rows(results)
    rows = getattr(results, "rows", results)
    rows = [r.to_dict() if hasattr(r, "to_dict") else r for r in rows]
    return _validate_rows(rows, "results")


def _select(rule: Rule, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cand = [r for r in rows if r["metric"] == rule.metric and (rule.dataset is None or r["dataset"] == rule.dataset)]
    if rule.member is not None:
        return [r for r in cand if r["member"] is not None and rule.member in ("*", r["member"])]
    if rule.ensemble is not None:
        return [r for r in cand if r["ensemble"] is not None and rule.ensemble in ("*", r["ensemble"])]
    ens_rows = [r for r in cand if r["ensemble"] is not None and r["member"] is None]
    return ens_rows or [r for r in cand if r["member"] is not None]


def _baseline(rule: Rule, row: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[float | None, str]:
    ref = rule.relative_to
    assert ref is not None  # only called for relative rules
    metric = _baseline_metric(rule, ref)
    same = [r for r in rows if r["metric"] == metric and r["dataset"] == row["dataset"]]
    if "ensemble" in ref:
        vals = [r["value"] for r in same if r["ensemble"] == ref["ensemble"] and r["member"] is None]
        return (vals[0], "") if vals else (None, f"no {metric} row for ensemble {ref['ensemble']} on {row['dataset']}")
    who = ref["member"]
    members = [r for r in same if r["member"] is not None and r["ensemble"] in (None, row["ensemble"])]
    if who in _AGGREGATES:
        if row["ensemble"] is not None:
            names = row["ensemble"].split("+")
            members = [r for r in members if r["member"] in names]
        vals = [r["value"] for r in members if math.isfinite(r["value"])]
        if not vals:
            return None, f"no member {metric} rows on {row['dataset']} to take the {who} of"
        agg = {"best": max(vals), "worst": min(vals), "mean": sum(vals) / len(vals)}[who]
        return agg, ""
    vals = [r["value"] for r in members if r["member"] == who]
    return (vals[0], "") if vals else (None, f"no {metric} row for member {who} on {row['dataset']}")


def _check_rule(rule: Rule, rows: list[dict[str, Any]]) -> list[RuleVerdict]:
    selected = _select(rule, rows)
    if not selected:
        where = f" on {rule.dataset}" if rule.dataset else ""
        return [
            RuleVerdict(
                rule=rule.id,
                description=rule.describe(),
                passed=False,
                dataset=rule.dataset,
                min=rule.min,
                max=rule.max,
                note=f"no matching results for {rule.metric}{where}",
            )
        ]
    out = []
    for row in selected:
        value = row["value"]
        baseline, note = (None, "")
        observed: float | None = value
        if rule.relative_to is not None:
            baseline, note = _baseline(rule, row, rows)
            observed = None if baseline is None else value - baseline
        on_estimate = observed is not None and math.isfinite(observed) and _within(rule, observed)
        if not note and (observed is None or not math.isfinite(observed)):
            note = "value is NaN"
        check = RuleVerdict(
            rule=rule.id,
            description=rule.describe(),
            passed=on_estimate,
            ensemble=row["ensemble"],
            member=row["member"],
            dataset=row["dataset"],
            value=value,
            baseline=baseline,
            observed=observed,
            min=rule.min,
            max=rule.max,
            note=note,
            bound=rule.bound,
            test=rule.test,
            alpha=rule.alpha,
            passed_on_estimate=on_estimate if observed is not None and math.isfinite(observed) else None,
        )
        if rule.bound or rule.test:
            _check_evidence(rule, row, rows, check)
        out.append(check)
    return out


def _within(rule: Rule, x: float) -> bool:
    return (rule.min is None or x >= rule.min) and (rule.max is None or x <= rule.max)


def _check_evidence(rule: Rule, row: dict[str, Any], rows: list[dict[str, Any]], check: RuleVerdict) -> None:
    """Fill the interval / p-value of a bound or test rule into ``check`` and decide it on them."""
    src = _difference_row(rule, row, rows)
    if src is None:
        ref = rule.relative_to or {}
        who = f"member {ref['member']}" if "member" in ref else f"ensemble {ref.get('ensemble')}"
        raise PolicyError(
            f"rule {rule.id!r}: the results lack intervals for the difference {rule.metric} − {who} "
            f"{_baseline_metric(rule, ref)} on {row['dataset']}",
            "ovdiv stores paired intervals of ensemble_top1 − best/mean member top1 (the improvement rows) and "
            "− each member's top1 (improvement_vs_member rows); "
            'write the rule on "improvement" or drop "bound"/"test"',
        )
    check.ci_low, check.ci_high, check.ci_level = src.get("ci_low"), src.get("ci_high"), src.get("ci_level")
    check.p_value = src.get("p_value")
    reasons: list[str] = []
    ok = check.passed_on_estimate is True
    if rule.bound:
        b = check.ci_low if rule.bound == "lower" else check.ci_high
        if b is None or not math.isfinite(b):
            ok = False
            reasons.append(
                f"the results have no {rule.bound} confidence bound for {src['metric']} on {row['dataset']} "
                "(evaluated with --bootstrap 0, or an ovdiv-results/1 file)"
            )
        elif not _within(rule, b):
            ok = False
            level = f"{100 * check.ci_level:g}% " if check.ci_level else ""
            op = f">= {rule.min:g}" if rule.bound == "lower" else f"<= {rule.max:g}"
            reasons.append(f"its {level}{rule.bound} bound {b:.4f} is not {op}")
    if rule.test:
        p = check.p_value
        if p is None or not math.isfinite(p):
            ok = False
            reasons.append(f"the results have no McNemar p-value for {src['metric']} on {row['dataset']}")
        elif not p < (rule.alpha or 0.05):
            ok = False
            reasons.append(f"McNemar p = {p:.3g} is not < alpha = {rule.alpha:g}")
    check.passed = ok
    if reasons:
        est = "" if check.observed is None else f"{check.observed:.4f}"
        lead = f"passes on the estimate {est} but " if check.passed_on_estimate else ""
        text = lead + "; ".join(reasons)
        check.note = f"{check.note}; {text}" if check.note else text
