"""The cross-boundary transfer engine: facts in, decision out. Pure functions, no I/O.

The rules are data (``rules/crossborder.yaml``), validated and compiled on load; every
decision carries the rules' version and SHA-256 and the normalised facts it saw, so it can
be explained and replayed. Regimes are chosen by the exporter's origin; within a regime
the first rule whose conditions hold decides. If none holds, the decision is
HUMAN_REVIEW: nothing is ever exempt by default.

Mechanism evidence (filed contracts, certificates, CAC approvals) is checked against the
decision by :func:`check_evidence` (crossborder-rules.md §7.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gbadz.access.identity import GBA9_CITIES, JURISDICTIONS

ENGINE_VERSION = "1"
OUTCOMES = ("NOT_EXPORT", "EXEMPT", "GBA_SC", "SCC_OR_CERT", "ASSESSMENT", "HUMAN_REVIEW", "PROHIBITED")
#: How demanding an outcome is, for comparisons (a higher number never lets more through).
STRICTNESS = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}
REGIONS = ("CN_GBA9", "CN_OTHER", "HK", "MO", "OTHER")
CATEGORIES = ("core", "important", "general")
PURPOSES = (
    "contract_with_individual",
    "cross_border_hr",
    "emergency",
    "statutory_duty",
    "trade_transport_academic_mfg_marketing",
    "foreign_pi_transit",
    "other",
)
SECTORS = ("none", "hgr", "health", "finance", "maps", "auto", "government")
MACAO_GROUNDS = ("none", "consent", "contract", "vital_interest", "public_interest", "public_register")
EVIDENCE_KINDS = ("ASSESSMENT", "SCC", "CERT", "GBA_SC")
MAX_COUNT = 2_000_000_000  # more individuals than live in the region several times over
GBA_SC_GUIDELINES = {
    "HK": "GBA SC Implementation Guidelines (Mainland-HK, CAC/ITIB Ann. 2023 No.3) Arts.2-3",
    "MO": "GBA SC Implementation Guidelines (Mainland-Macao, CAC/DSEDT/DSPDP Ann. 2024 No.1)",
}


class FactError(ValueError):
    """An input fact is unknown or out of range; ``field`` names it."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class RulesError(ValueError):
    """The rules file is malformed; the message names the rule and the problem."""


_REGION_OF = {
    **dict.fromkeys(GBA9_CITIES, "CN_GBA9"),
    "CN": "CN_OTHER",
    "HK": "HK",
    "MO": "MO",
    "OTHER": "OTHER",
}
_CATEGORIES, _PURPOSES = frozenset(CATEGORIES), frozenset(PURPOSES)
_SECTORS, _MACAO_GROUNDS = frozenset(SECTORS), frozenset(MACAO_GROUNDS)


def region_of(code: str) -> str:
    """Organisation jurisdiction code (CN-SZ, CN, HK, MO, OTHER) to the engine's region."""
    try:
        return _REGION_OF[code]
    except (KeyError, TypeError):
        raise FactError(
            "jurisdiction", f"unknown code {code!r}: use one of {' '.join(JURISDICTIONS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class TransferFacts:
    """What the engine needs to know (crossborder-rules.md §7.1), in the organisation codes."""

    origin: str
    dest: str
    category: str = "general"
    has_pi: bool = False
    has_spi: bool = False
    anonymised: bool = False
    anonymisation_report_ref: str | None = None
    exporter_ciio: bool = False
    pi_ytd_after: int = 0
    spi_ytd_after: int = 0
    recipient_gba_registered: bool = False
    onward_outside_gba: bool = False
    gba_sc_opt_in: bool = False
    purpose: str = "other"
    exporter_ftz_zone: str | None = None
    dataset_on_ftz_list: bool = True
    sector_overlay: str = "none"
    sector_approved: bool = False
    hk_new_purpose_without_consent: bool = False
    originated_under_gba_sc: bool = False
    macao_art20_ground: str = "none"

    def validate(self) -> None:
        # Written for speed (it runs on every decision): direct attribute reads, set lookups.
        if self.origin not in _REGION_OF:
            raise FactError("origin", f"unknown code {self.origin!r}: use one of {' '.join(JURISDICTIONS)}")
        if self.dest not in _REGION_OF:
            raise FactError("dest", f"unknown code {self.dest!r}: use one of {' '.join(JURISDICTIONS)}")
        if self.category not in _CATEGORIES:
            raise FactError(
                "category", f"unknown value {self.category!r}: use one of {', '.join(CATEGORIES)}"
            )
        if self.purpose not in _PURPOSES:
            raise FactError("purpose", f"unknown value {self.purpose!r}: use one of {', '.join(PURPOSES)}")
        if self.sector_overlay not in _SECTORS:
            raise FactError(
                "sector_overlay", f"unknown value {self.sector_overlay!r}: use one of {', '.join(SECTORS)}"
            )
        if self.macao_art20_ground not in _MACAO_GROUNDS:
            raise FactError(
                "macao_art20_ground",
                f"unknown value {self.macao_art20_ground!r}: use one of {', '.join(MACAO_GROUNDS)}",
            )
        for name, value in (("pi_ytd_after", self.pi_ytd_after), ("spi_ytd_after", self.spi_ytd_after)):
            if type(value) is not int:
                raise FactError(name, "must be a whole number of individuals")
            if value < 0:
                raise FactError(name, "cannot be negative")
            if value > MAX_COUNT:
                raise FactError(name, f"{value} individuals is not plausible (over {MAX_COUNT:,})")
        if self.has_spi and not self.has_pi:
            raise FactError(
                "has_spi", "sensitive personal information is personal information: set has_pi too"
            )


@dataclass(frozen=True, slots=True)
class Alternative:
    outcome: str
    note: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str
    rule_id: str
    legal_basis: str
    obligations: tuple[str, ...]
    evidence_required: tuple[str, ...]
    note: str | None
    alternatives: tuple[Alternative, ...]
    counter: str  # "mechanism" | "exempt" | "none": which year-to-date counter the transfer adds to
    rules_version: str
    rules_hash: str
    engine_version: str
    facts: Mapping[str, Any] = field(repr=False)

    @property
    def allowed_without_review(self) -> bool:
        return self.outcome in ("NOT_EXPORT", "EXEMPT")

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule_id": self.rule_id,
            "legal_basis": self.legal_basis,
            "obligations": list(self.obligations),
            "evidence_required": list(self.evidence_required),
            "note": self.note,
            "alternatives": [{"outcome": a.outcome, "note": a.note} for a in self.alternatives],
            "counter": self.counter,
            "rules_version": self.rules_version,
            "rules_hash": self.rules_hash,
            "engine_version": self.engine_version,
            "facts": dict(self.facts),
        }


# -- rules: loading, validation, compilation -------------------------------------------
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


def _condition(where: str, key: str, value: Any) -> tuple[str, str, Any]:
    """Validate one condition; return (fact, Python operator, constant) for the rule's expression."""
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
        if kind is not int or isinstance(value, bool) or not isinstance(value, int):
            raise RulesError(f"{where}: {key} needs a whole number on a count fact")
        return name, op, value
    if kind is bool and not isinstance(value, bool):
        raise RulesError(f"{where}: {name} is true or false")
    if isinstance(kind, tuple) and value not in kind:
        raise RulesError(f"{where}: {name} must be one of {', '.join(kind)}")
    return name, op, value


def _compile_when(where: str, when: Any) -> Predicate | None:
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
        name, op, constant = _condition(where, key, value)
        constants[f"c{i}"] = constant
        parts.append(f"f[{name!r}] {op} c{i}")
    namespace: dict[str, Any] = {"__builtins__": {}, **constants}
    code = compile("lambda f: " + " and ".join(parts), f"<rule {where}>", "eval")
    predicate: Predicate = eval(code, namespace)  # noqa: S307 - source built from validated names and operators
    return predicate


def _holds(match: Predicate | None, facts: Mapping[str, Any]) -> bool:
    return match is None or match(facts)


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


@dataclass(frozen=True, slots=True)
class AlternativeRule:
    name: str
    match: Predicate | None
    outcome: str
    note: str


@dataclass(frozen=True)
class RuleSet:
    version: str
    sha256: str
    regimes: tuple[tuple[frozenset[str], tuple[Rule, ...]], ...]
    alternatives: Mapping[str, AlternativeRule]
    thresholds: Mapping[str, int]
    validity: Mapping[str, int]
    ftz_approved_lists: Mapping[str, Any]
    macao_adequate_destinations: frozenset[str]
    rule_ids: tuple[str, ...]


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
    for key in ("version", "regimes", "thresholds", "validity"):
        if key not in doc:
            raise RulesError(f"rules file: missing {key!r}")
    alternatives = {}
    for name, spec in (doc.get("alternatives") or {}).items():
        if not isinstance(spec, dict) or spec.get("outcome") not in OUTCOMES:
            raise RulesError(f"alternative {name}: needs a known outcome")
        alternatives[name] = AlternativeRule(
            name,
            _compile_when(f"alternative {name}", spec.get("when")),
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
            evidence = _strings(where, spec.get("evidence"))
            if any(e not in EVIDENCE_KINDS for e in evidence):
                raise RulesError(f"{where}: evidence kinds are {', '.join(EVIDENCE_KINDS)}")
            alts = _strings(where, spec.get("alternatives"))
            if any(a not in alternatives for a in alts):
                raise RulesError(f"{where}: unknown alternative in {alts}")
            counter = spec.get("counter")
            if counter not in (None, "exempt", "mechanism"):
                raise RulesError(f"{where}: counter is exempt or mechanism")
            rules.append(
                Rule(
                    id=rid,
                    match=_compile_when(where, spec.get("when")),
                    outcome=spec["outcome"],
                    legal_basis=str(spec["legal_basis"]),
                    obligations=_strings(where, spec.get("obligations"))
                    + _strings(where, spec.get("obligations_extra")),
                    evidence=evidence,
                    note=spec.get("note"),
                    alternatives=alts,
                    counter=counter,
                )
            )
        regimes.append((origins, tuple(rules)))
    if covered != set(REGIONS):
        raise RulesError(f"regimes must cover every origin region; missing {sorted(set(REGIONS) - covered)}")
    return RuleSet(
        version=str(doc["version"]),
        sha256=hashlib.sha256(raw).hexdigest(),
        regimes=tuple(regimes),
        alternatives=alternatives,
        thresholds={k: int(v) for k, v in doc["thresholds"].items()},
        validity={k: int(v) for k, v in doc["validity"].items()},
        ftz_approved_lists=dict(doc.get("ftz_approved_lists") or {}),
        macao_adequate_destinations=frozenset(doc.get("macao_adequate_destinations") or []),
        rule_ids=tuple(seen_ids),
    )


def load_rules(path: Path | None = None) -> RuleSet:
    if path is None:
        raw = (resources.files("gbadz.access") / "rules" / "crossborder.yaml").read_bytes()
    else:
        raw = path.read_bytes()
    return parse_rules(raw)


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    return load_rules()


# -- deciding ---------------------------------------------------------------------------
def normalise(facts: TransferFacts, rules: RuleSet) -> dict[str, Any]:
    """The facts the rules see: regions instead of cities, and derived flags."""
    facts.validate()
    origin, dest = _REGION_OF[facts.origin], _REGION_OF[facts.dest]
    ftz = rules.ftz_approved_lists.get(facts.exporter_ftz_zone or "")
    return {
        "origin": origin,
        "dest": dest,
        "category": facts.category,
        "purpose": facts.purpose,
        "sector_overlay": facts.sector_overlay,
        "macao_art20_ground": facts.macao_art20_ground,
        "has_pi": facts.has_pi,
        "has_spi": facts.has_spi,
        # PIPL Art.73(4): only an evaluated, irreversible anonymisation takes data out of PI.
        "anonymised": facts.anonymised and bool(facts.anonymisation_report_ref),
        "anonymisation_claimed": facts.anonymised,
        "exporter_ciio": facts.exporter_ciio,
        "recipient_gba_registered": facts.recipient_gba_registered,
        "onward_outside_gba": facts.onward_outside_gba,
        "gba_sc_opt_in": facts.gba_sc_opt_in,
        "ftz_exempt": ftz is not None and not facts.dataset_on_ftz_list,
        "sector_approved": facts.sector_approved,
        "hk_new_purpose_without_consent": facts.hk_new_purpose_without_consent,
        "originated_under_gba_sc": facts.originated_under_gba_sc,
        "dest_macao_adequate": dest in rules.macao_adequate_destinations,
        "pi_ytd_after": facts.pi_ytd_after,
        "spi_ytd_after": facts.spi_ytd_after,
        "exporter_ftz_zone": facts.exporter_ftz_zone,
    }


def _labels(f: Mapping[str, Any], facts: TransferFacts, rules: RuleSet) -> dict[str, str]:
    ftz = rules.ftz_approved_lists.get(facts.exporter_ftz_zone or "") or {}
    return {
        "gba_sc_guidelines": GBA_SC_GUIDELINES.get(f["dest"], GBA_SC_GUIDELINES["HK"]),
        "sector_overlay": f["sector_overlay"],
        "ftz_zone": facts.exporter_ftz_zone or "",
        "ftz_list_version": str(ftz.get("version", "")) if isinstance(ftz, dict) else "",
    }


def decide(facts: TransferFacts, rules: RuleSet | None = None) -> Decision:
    """Decide one transfer. Raises :class:`FactError` for bad input; never returns EXEMPT by default."""
    rules = rules or default_rules()
    f = normalise(facts, rules)
    for origins, regime_rules in rules.regimes:
        if f["origin"] not in origins:
            continue
        for rule in regime_rules:
            if rule.match is None or rule.match(f):
                return _decision(rule, f, facts, rules)
    return Decision(
        outcome="HUMAN_REVIEW",
        rule_id="NO_MATCH",
        legal_basis="No rule of the rule set matched these facts",
        obligations=(),
        evidence_required=(),
        note="No rule applied: a person decides, and the rules may need a new row.",
        alternatives=(),
        counter="mechanism" if f["has_pi"] and not f["anonymised"] else "none",
        rules_version=rules.version,
        rules_hash=rules.sha256,
        engine_version=ENGINE_VERSION,
        facts=f,
    )


def _decision(rule: Rule, f: Mapping[str, Any], facts: TransferFacts, rules: RuleSet) -> Decision:
    basis = rule.legal_basis
    if "{" in basis:
        basis = basis.format(**_labels(f, facts, rules))
    alternatives = tuple(
        Alternative(alt.outcome, alt.note)
        for alt in (rules.alternatives[name] for name in rule.alternatives)
        if _holds(alt.match, f)
    )
    if rule.counter is not None:
        counter = rule.counter
    elif rule.outcome == "NOT_EXPORT" or not f["has_pi"] or f["anonymised"]:
        counter = "none"
    else:
        counter = "mechanism"
    return Decision(
        outcome=rule.outcome,
        rule_id=rule.id,
        legal_basis=basis,
        obligations=rule.obligations,
        evidence_required=rule.evidence,
        note=rule.note,
        alternatives=alternatives,
        counter=counter,
        rules_version=rules.version,
        rules_hash=rules.sha256,
        engine_version=ENGINE_VERSION,
        facts=f,
    )


# -- mechanism evidence (§7.3) ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evidence:
    """A mechanism on file for one exporter and recipient pair."""

    kind: str  # ASSESSMENT | SCC | CERT | GBA_SC
    reference: str  # approval no. / filing no. / certificate no.
    issued: date | None = None  # assessment or certificate issue date
    valid_to: date | None = None  # explicit end of validity (extensions included)
    effective_date: date | None = None  # contract effective date (SCC, GBA SC)
    filing_date: date | None = None  # when the contract was filed
    purposes: tuple[str, ...] = ()  # purposes the mechanism covers; empty means any


@dataclass(frozen=True, slots=True)
class EvidenceCheck:
    status: str  # not_required | satisfied | missing | expired | late_filing | out_of_scope
    used: Evidence | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def add_working_days(start: date, days: int) -> date:
    """Monday to Friday; public holidays are not modelled [U], which errs towards stricter."""
    current, added = start, 0
    while added < days:
        current += timedelta(days=1)
        if current.weekday() < 5:
            added += 1
    return current


def working_days_between(start: date, end: date) -> int:
    if end <= start:
        return 0
    return sum(1 for i in range(1, (end - start).days + 1) if (start + timedelta(days=i)).weekday() < 5)


def _years_after(start: date, years: int) -> date:
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February
        return start.replace(year=start.year + years, day=28)


def valid_until(item: Evidence, rules: RuleSet | None = None) -> date | None:
    """When an assessment or certification stops being valid (explicit, or issue date + the rules' years)."""
    if item.valid_to is not None or item.kind not in ("ASSESSMENT", "CERT"):
        return item.valid_to
    if item.issued is None:
        return None
    validity = (rules or default_rules()).validity
    return _years_after(
        item.issued, validity["assessment_years" if item.kind == "ASSESSMENT" else "certificate_years"]
    )


def _check_one(item: Evidence, purpose: str, today: date, rules: RuleSet) -> tuple[str, list[str], list[str]]:
    validity = rules.validity
    problems: list[str] = []
    warnings: list[str] = []
    if item.purposes and purpose not in item.purposes:
        return "out_of_scope", [f"{item.kind} {item.reference} does not cover purpose {purpose}"], []
    if item.kind in ("ASSESSMENT", "CERT"):
        valid_to = valid_until(item, rules)
        if valid_to is None:
            return "missing", [f"{item.kind} {item.reference} has no issue date or validity"], []
        if today > valid_to:
            return "expired", [f"{item.kind} {item.reference} expired on {valid_to.isoformat()}"], []
        left = working_days_between(today, valid_to)
        if left <= validity["expiry_warning_working_days"]:
            warnings.append(
                f"{item.kind} {item.reference} expires on {valid_to.isoformat()} ({left} working days): apply for extension"
            )
        return "satisfied", problems, warnings
    # SCC and GBA SC: a filing number, filed within 10 working days of the contract's effect.
    if not item.reference or item.filing_date is None or item.effective_date is None:
        return "missing", [f"{item.kind} needs a filing number, an effective date and a filing date"], []
    deadline = add_working_days(item.effective_date, validity["filing_working_days"])
    if item.filing_date > deadline:
        return (
            "late_filing",
            [
                f"{item.kind} {item.reference} was filed on {item.filing_date.isoformat()}, after the deadline "
                f"{deadline.isoformat()} (10 working days from {item.effective_date.isoformat()})"
            ],
            [],
        )
    if item.filing_date > today:
        return "missing", [f"{item.kind} {item.reference} is dated to be filed in the future"], []
    return "satisfied", problems, warnings


def check_evidence(
    decision: Decision, evidence: Sequence[Evidence], today: date, rules: RuleSet | None = None
) -> EvidenceCheck:
    """Does the evidence on file satisfy the mechanism the decision requires, today?"""
    return check_mechanisms(
        decision.evidence_required, str(decision.facts.get("purpose", "other")), evidence, today, rules
    )


def check_mechanisms(
    needed: Sequence[str],
    purpose: str,
    evidence: Sequence[Evidence],
    today: date,
    rules: RuleSet | None = None,
) -> EvidenceCheck:
    """Does the evidence on file hold one valid mechanism of the ``needed`` kinds for ``purpose``, today?"""
    rules = rules or default_rules()
    if not needed:
        return EvidenceCheck("not_required", None, (), ())
    best_status, best_problems = (
        "missing",
        [f"no {' or '.join(needed)} on file for this exporter and recipient"],
    )
    order = ["missing", "out_of_scope", "late_filing", "expired"]
    for item in evidence:
        if item.kind not in needed:
            continue
        status, problems, warnings = _check_one(item, purpose, today, rules)
        if status == "satisfied":
            return EvidenceCheck("satisfied", item, (), tuple(warnings))
        if order.index(status) >= order.index(best_status):
            best_status, best_problems = status, problems
    return EvidenceCheck(best_status, None, tuple(best_problems), ())
