"""The rules: the decision table of crossborder-rules.md §7 as versioned data, validated and compiled.

``rules/crossborder.yaml`` is the only source of the thresholds, validity periods, the time
zone in which the law's years and dates are counted, and the conditions of the GBA standard
contract. Conditions may name a threshold instead of repeating its number
(``pi_ytd_after_gte: pi_assessment_from``), so changing a threshold in one place changes the
engine, the compliance report and the console's chart together.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from gbadz.vocabulary import (
    CATEGORIES,
    EVIDENCE_KINDS,
    MACAO_GROUNDS,
    OUTCOMES,
    PURPOSES,
    REGIONS,
    RELEASES,
    SECTORS,
)

THRESHOLD_NAMES = ("pi_exempt_below", "pi_assessment_from", "spi_assessment_from")
VALIDITY_NAMES = (
    "assessment_years",
    "certificate_years",
    "filing_working_days",
    "expiry_warning_working_days",
    "assessment_volume_margin_percent",
    "pipia_retention_years",
    "macao_notification_days",
    "deletion_attestation_days",
)


class RulesError(ValueError):
    """The rules file is malformed; the message names the rule and the problem."""


FACT_NAMES = {
    "origin": REGIONS,
    "dest": REGIONS,
    "category": CATEGORIES,
    "purpose": PURPOSES,
    "sector_overlay": SECTORS,
    "macao_art20_ground": MACAO_GROUNDS,
    "has_pi": bool,
    "has_spi": bool,
    "anonymised": bool,
    "anonymisation_claimed": bool,
    "exporter_ciio": bool,
    "recipient_gba_registered": bool,
    "exporter_gba_registered": bool,
    "foreign_pi_transit": bool,
    "foreign_pi_transit_claimed": bool,
    "necessity_accepted": bool,
    "volume_known": bool,
    "release": RELEASES,
    "dp_release_accepted": bool,
    "onward_outside_gba": bool,
    "gba_sc_opt_in": bool,
    "ftz_exempt": bool,
    "sector_approved": bool,
    "hk_new_purpose_without_consent": bool,
    "originated_under_gba_sc": bool,
    "dest_macao_adequate": bool,
    "pi_ytd_after": int,
    "spi_ytd_after": int,
}
Predicate = Callable[[Mapping[str, Any]], bool]


_OPERATORS = (("_not_in", "not in"), ("_in", "in"), ("_gte", ">="), ("_lt", "<"))


def _condition(where: str, key: str, value: Any, thresholds: Mapping[str, int]) -> tuple[str, str, Any]:
    """Validate one condition; return (fact, Python operator, constant) for the rule's expression.

    A count bound may name a threshold (``pi_ytd_after_gte: pi_assessment_from``): the number
    then lives only in ``thresholds:``.
    """
    name, op = key, "=="
    for suffix, operator in _OPERATORS:
        if key.endswith(suffix) and key[: -len(suffix)] in FACT_NAMES:
            name, op = key[: -len(suffix)], operator
            break
    kind = FACT_NAMES.get(name)
    if kind is None:
        raise RulesError(f"{where}: unknown fact {name!r}")
    if op in ("in", "not in"):
        if not isinstance(value, list) or not value:
            raise RulesError(f"{where}: {key} needs a non-empty list")
        if isinstance(kind, tuple) and any(v not in kind for v in value):
            raise RulesError(f"{where}: {key} has values outside {', '.join(kind)}")
        return name, op, frozenset(value)
    if op in (">=", "<"):
        if isinstance(value, str):
            if value not in thresholds:
                raise RulesError(f"{where}: {key} names no threshold {value!r}")
            value = thresholds[value]
        if kind is not int or isinstance(value, bool) or not isinstance(value, int):
            raise RulesError(f"{where}: {key} needs a whole number on a count fact")
        return name, op, value
    if kind is bool and not isinstance(value, bool):
        raise RulesError(f"{where}: {name} is true or false")
    if isinstance(kind, tuple) and value not in kind:
        raise RulesError(f"{where}: {name} must be one of {', '.join(kind)}")
    return name, op, value


def _compile_when(where: str, when: Any, thresholds: Mapping[str, int]) -> Predicate | None:
    """The rule's conditions as one predicate (None: always holds).

    The expression is generated only from whitelisted fact names and operators, with the
    validated constants bound by name: one call per rule instead of one per condition.
    """
    if when is None:
        return None
    if not isinstance(when, dict):
        raise RulesError(f"{where}: 'when' must be a mapping of conditions")
    if not when:
        return None
    parts: list[str] = []
    constants: dict[str, Any] = {}
    for i, (key, value) in enumerate(when.items()):
        name, op, constant = _condition(where, key, value, thresholds)
        constants[f"c{i}"] = constant
        parts.append(f"f[{name!r}] {op} c{i}")
    namespace: dict[str, Any] = {"__builtins__": {}, **constants}
    code = compile("lambda f: " + " and ".join(parts), f"<rule {where}>", "eval")
    predicate: Predicate = eval(code, namespace)  # noqa: S307 - source built from validated names and operators
    return predicate


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    match: Predicate | None
    outcome: str
    legal_basis: str
    obligations: tuple[str, ...]
    evidence: tuple[str, ...]
    note: str | None
    alternatives: tuple[str, ...]
    counter: str | None
    #: The reviewer's finding this rule waits for (e.g. necessity_accepted): approval needs it.
    awaits: str | None = None
    #: A sector overlay rule adds to the general regime, decided as if this fact held (M2).
    adds_to_general: str | None = None
    #: The rules a reviewer's determination may name as the final basis of this HUMAN_REVIEW.
    determinable_as: tuple[str, ...] = ()
    #: Never matched by the engine: only a reviewer's determination names it.
    determination_only: bool = False


#: Facts only a compliance officer's finding can set (the relaxing facts of invariant 6).
REVIEWER_FINDINGS = frozenset(
    {"necessity_accepted", "foreign_pi_transit", "anonymised", "macao_art20_ground", "dp_release_accepted"}
)


@dataclass(frozen=True, slots=True)
class AlternativeRule:
    name: str
    match: Predicate | None
    outcome: str
    note: str


@dataclass(frozen=True)
class RuleSet:
    """A validated, compiled rules document."""

    version: str
    sha256: str
    regimes: tuple[tuple[frozenset[str], tuple[Rule, ...]], ...]
    alternatives: Mapping[str, AlternativeRule]
    thresholds: Mapping[str, int]
    validity: Mapping[str, int]
    timezone: str
    gba_sc_area: frozenset[str]  # regions both parties of a GBA standard contract must be in
    gba_sc_onward_outside_area: bool  # whether the recipient may pass the data on outside that area
    ftz_approved_lists: Mapping[str, Any]
    macao_adequate_destinations: frozenset[str]
    rule_ids: tuple[str, ...]

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id, in any regime."""
        for _, rules in self.regimes:
            for rule in rules:
                if rule.id == rule_id:
                    return rule
        return None

    @cached_property
    def zone(self) -> ZoneInfo:
        """The time zone of the law's years and dates (Asia/Shanghai: the CAC counts in Beijing time)."""
        return ZoneInfo(self.timezone)

    def threshold_lines(self) -> dict[str, tuple[int, ...]]:
        """The legal volume thresholds per counter kind, ascending (for reports and charts)."""
        t = self.thresholds
        return {
            "spi": (t["spi_assessment_from"],),
            "pi": tuple(sorted((t["pi_exempt_below"], t["pi_assessment_from"]))),
        }


#: What a legal basis may quote besides the thresholds (filled in by the engine per decision).
DECISION_LABELS = frozenset({"gba_sc_guidelines", "sector_overlay", "ftz_zone", "ftz_list_version"})


def _check_labels(where: str, text: str, thresholds: Mapping[str, int]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise RulesError(f"{where}: legal basis has a broken placeholder ({exc})") from None
    unknown = names - DECISION_LABELS - set(thresholds)
    if unknown:
        raise RulesError(f"{where}: legal basis quotes unknown {', '.join(sorted(unknown))}")
    try:  # the engine fills every placeholder with text: a format spec must work on text
        text.format(**dict.fromkeys(DECISION_LABELS | set(thresholds), "x"))
    except (ValueError, KeyError, IndexError) as exc:
        raise RulesError(f"{where}: legal basis has a placeholder the engine cannot fill ({exc})") from None


def _numbers(where: str, value: Any, names: tuple[str, ...]) -> dict[str, int]:
    if not isinstance(value, dict) or set(value) != set(names):
        raise RulesError(f"{where}: needs exactly {', '.join(names)}")
    if not all(type(v) is int and v >= 0 for v in value.values()):
        raise RulesError(f"{where}: every entry is a whole number")
    return {k: int(v) for k, v in value.items()}


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: expected a list of strings")
    return tuple(value)


def parse_rules(raw: bytes) -> RuleSet:
    """Validate and compile a rules document; raise :class:`RulesError` naming what is wrong."""
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RulesError(f"rules file is not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise RulesError("rules file must be a mapping")
    for key in ("version", "regimes", "thresholds", "validity", "timezone", "gba_standard_contract"):
        if key not in doc:
            raise RulesError(f"rules file: missing {key!r}")
    thresholds = _numbers("thresholds", doc["thresholds"], THRESHOLD_NAMES)
    validity = _numbers("validity", doc["validity"], VALIDITY_NAMES)
    try:
        ZoneInfo(str(doc["timezone"]))
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError(f"timezone: {doc['timezone']!r} is not an IANA time zone") from None
    gba = doc["gba_standard_contract"]
    if not isinstance(gba, dict) or not set(_strings("gba_standard_contract.area", gba.get("area"))) <= set(
        REGIONS
    ):
        raise RulesError(f"gba_standard_contract.area: list regions from {', '.join(REGIONS)}")
    if not isinstance(gba.get("onward_outside_area"), bool):
        raise RulesError("gba_standard_contract.onward_outside_area: true or false")
    alternatives = {}
    for name, spec in (doc.get("alternatives") or {}).items():
        if not isinstance(spec, dict) or spec.get("outcome") not in OUTCOMES:
            raise RulesError(f"alternative {name}: needs a known outcome")
        alternatives[name] = AlternativeRule(
            name,
            _compile_when(f"alternative {name}", spec.get("when"), thresholds),
            spec["outcome"],
            str(spec.get("note", "")),
        )
    regimes = []
    seen_ids: list[str] = []
    covered: set[str] = set()
    for regime in doc["regimes"]:
        name = regime.get("name", "?")
        origins = frozenset(regime.get("origin_in") or [])
        if not origins or not origins <= set(REGIONS):
            raise RulesError(f"regime {name}: origin_in must list regions from {', '.join(REGIONS)}")
        if origins & covered:
            raise RulesError(
                f"regime {name}: origins {sorted(origins & covered)} already covered by another regime"
            )
        covered |= origins
        rules = []
        for spec in regime.get("rules") or []:
            rid = str(spec.get("id", ""))
            where = f"rule {rid or '?'} ({name})"
            if not rid or rid in seen_ids:
                raise RulesError(f"{where}: every rule needs a unique id")
            seen_ids.append(rid)
            if spec.get("outcome") not in OUTCOMES:
                raise RulesError(f"{where}: outcome must be one of {', '.join(OUTCOMES)}")
            if not spec.get("legal_basis"):
                raise RulesError(f"{where}: a legal basis is required")
            _check_labels(where, str(spec["legal_basis"]), thresholds)
            evidence = _strings(where, spec.get("evidence"))
            if any(e not in EVIDENCE_KINDS for e in evidence):
                raise RulesError(f"{where}: evidence kinds are {', '.join(EVIDENCE_KINDS)}")
            alts = _strings(where, spec.get("alternatives"))
            if any(a not in alternatives for a in alts):
                raise RulesError(f"{where}: unknown alternative in {alts}")
            counter = spec.get("counter")
            # none: the transfer counts no individuals (an anonymised release is not PI).
            if counter not in (None, "exempt", "mechanism", "none"):
                raise RulesError(f"{where}: counter is exempt, mechanism or none")
            awaits = spec.get("awaits")
            if awaits is not None and (awaits not in REVIEWER_FINDINGS or spec["outcome"] != "HUMAN_REVIEW"):
                raise RulesError(
                    f"{where}: awaits names a reviewer's finding ({', '.join(sorted(REVIEWER_FINDINGS))}) "
                    "on a HUMAN_REVIEW rule"
                )
            determinable = _strings(where, spec.get("determinable_as"))
            if determinable and spec["outcome"] != "HUMAN_REVIEW":
                raise RulesError(f"{where}: determinable_as belongs on a HUMAN_REVIEW rule")
            only = spec.get("determination_only", False)
            if not isinstance(only, bool):
                raise RulesError(f"{where}: determination_only is true or false")
            if only and spec["outcome"] in ("HUMAN_REVIEW", "PROHIBITED", "EXEMPT", "NOT_EXPORT"):
                raise RulesError(f"{where}: a determination-only rule names a mechanism outcome")
            adds = spec.get("adds_to_general")
            if adds is not None and FACT_NAMES.get(adds) is not bool:
                raise RulesError(f"{where}: adds_to_general names a true/false fact")
            rules.append(
                Rule(
                    id=rid,
                    match=_compile_when(where, spec.get("when"), thresholds),
                    outcome=spec["outcome"],
                    legal_basis=str(spec["legal_basis"]),
                    obligations=_strings(where, spec.get("obligations"))
                    + _strings(where, spec.get("obligations_extra")),
                    evidence=evidence,
                    note=spec.get("note"),
                    alternatives=alts,
                    counter=counter,
                    awaits=awaits,
                    adds_to_general=adds,
                    determinable_as=determinable,
                    determination_only=only,
                )
            )
        regimes.append((origins, tuple(rules)))
    every = {rule.id: rule for _, rules in regimes for rule in rules}
    for rule in every.values():
        for target in rule.determinable_as:
            named = every.get(target)
            if named is None or named.outcome in ("HUMAN_REVIEW", "PROHIBITED"):
                raise RulesError(
                    f"rule {rule.id}: determinable_as names {target!r}, which is not a rule with a "
                    "final outcome"
                )
    if covered != set(REGIONS):
        raise RulesError(f"regimes must cover every origin region; missing {sorted(set(REGIONS) - covered)}")
    return RuleSet(
        version=str(doc["version"]),
        sha256=hashlib.sha256(raw).hexdigest(),
        regimes=tuple(regimes),
        alternatives=alternatives,
        thresholds=thresholds,
        validity=validity,
        timezone=str(doc["timezone"]),
        gba_sc_area=frozenset(_strings("gba_standard_contract.area", gba["area"])),
        gba_sc_onward_outside_area=bool(gba["onward_outside_area"]),
        ftz_approved_lists=dict(doc.get("ftz_approved_lists") or {}),
        macao_adequate_destinations=frozenset(doc.get("macao_adequate_destinations") or []),
        rule_ids=tuple(seen_ids),
    )


def load_rules(path: Path | None = None) -> RuleSet:
    if path is None:
        raw = (resources.files("gbadz.law") / "rules" / "crossborder.yaml").read_bytes()
    else:
        raw = path.read_bytes()
    return parse_rules(raw)


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    return load_rules()
