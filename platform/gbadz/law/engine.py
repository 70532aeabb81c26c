"""The cross-boundary transfer engine: facts in, decision out. Pure functions, no I/O.

Every decision carries the rules' version and SHA-256 and the normalised facts it saw, so
it can be explained and replayed. Regimes are chosen by the exporter's origin; within a
regime the first rule whose conditions hold decides. If none holds, the decision is
HUMAN_REVIEW: nothing is ever exempt by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gbadz.law.rules import Rule, RuleSet, default_rules
from gbadz.vocabulary import (
    CATEGORIES,
    JURISDICTIONS,
    MACAO_GROUNDS,
    OUTCOMES,
    PURPOSES,
    REGION_OF,
    RELEASES,
    SECTORS,
)

ENGINE_VERSION = "1"
#: How demanding an outcome is, for comparisons (a higher number never lets more through).
STRICTNESS: dict[str, int] = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}
MAX_COUNT = 2_000_000_000  # more individuals than live in the region several times over
GBA_SC_GUIDELINES = {
    "HK": "GBA SC Implementation Guidelines (Mainland-HK, CAC/ITIB Ann. 2023 No.3) Arts.2-3",
    "MO": "GBA SC Implementation Guidelines (Mainland-Macao, CAC/DSEDT/DSPDP Ann. 2024 No.1)",
}
_REGION_OF = REGION_OF
_CATEGORIES, _PURPOSES = frozenset(CATEGORIES), frozenset(PURPOSES)
_SECTORS, _MACAO_GROUNDS = frozenset(SECTORS), frozenset(MACAO_GROUNDS)
_RELEASES = frozenset(RELEASES)


class FactError(ValueError):
    """An input fact is unknown or out of range; ``field`` names it."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


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
    exporter_gba_registered: bool = False
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
    #: Provisions 2024 Art.4: the dataset's provenance is foreign PI in transit, as claimed in
    #: its contract (``_claimed``) and as accepted by a compliance officer.
    foreign_pi_transit_claimed: bool = False
    foreign_pi_transit: bool = False
    #: Provisions 2024 Art.5(1)-(3): a compliance officer accepted the written necessity justification.
    necessity_accepted: bool = False
    #: The individuals in the data are counted (a published version); unknown volume goes to review.
    volume_known: bool = True
    #: What leaves (issue #18): ``copy`` (the rows), ``dp_aggregate`` or ``threshold_aggregate``
    #: (aggregates computed inside the zone). The platform derives it from the request's kind and
    #: the contract's compute mode; no requester declares it.
    release: str = "copy"
    #: PIPL Art.4, Art.73(4): a compliance officer found that the contract's differential privacy
    #: parameters make its releases anonymised information (only for a ``dp_aggregate``).
    dp_release_accepted: bool = False

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
        if self.release not in _RELEASES:
            raise FactError("release", f"unknown value {self.release!r}: use one of {', '.join(RELEASES)}")
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
    #: Other fact sets the decision was taken under (declared facts), each with its outcome;
    #: the decision is the strictest of them and of the platform's own facts.
    considered: tuple[Mapping[str, Any], ...] = ()
    #: The reviewer's finding this outcome waits for (approval without it is refused).
    awaits: str | None = None

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
            "considered": [dict(c) for c in self.considered],
            "awaits": self.awaits,
        }


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
        "exporter_gba_registered": facts.exporter_gba_registered,
        "foreign_pi_transit": facts.foreign_pi_transit and facts.foreign_pi_transit_claimed,
        "foreign_pi_transit_claimed": facts.foreign_pi_transit_claimed,
        "necessity_accepted": facts.necessity_accepted,
        "volume_known": facts.volume_known,
        "release": facts.release,
        # The finding is about a differentially private release; it says nothing of a copy.
        "dp_release_accepted": facts.dp_release_accepted and facts.release == "dp_aggregate",
        "gba_sc_variant": _gba_sc_variant(origin, dest),
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


def _gba_sc_variant(origin: str, dest: str) -> str | None:
    """Which GBA standard contract two regions would use: the non-Mainland party's (HK or MO)."""
    if origin == "CN_GBA9" and dest in GBA_SC_GUIDELINES:
        return dest
    if dest == "CN_GBA9" and origin in GBA_SC_GUIDELINES:
        return origin
    return None


def _labels(f: Mapping[str, Any], rules: RuleSet) -> dict[str, str]:
    zone = f.get("exporter_ftz_zone") or ""
    ftz = rules.ftz_approved_lists.get(zone) or {}
    variant = f["gba_sc_variant"]
    return {
        "gba_sc_guidelines": GBA_SC_GUIDELINES[variant]
        if variant
        else "GBA SC: no variant for these parties",
        "sector_overlay": f["sector_overlay"],
        "ftz_zone": zone,
        "ftz_list_version": str(ftz.get("version", "")) if isinstance(ftz, dict) else "",
        **{name: f"{value:,}" for name, value in rules.thresholds.items()},
    }


def decide(facts: TransferFacts, rules: RuleSet | None = None) -> Decision:
    """Decide one transfer. Raises :class:`FactError` for bad input; never returns EXEMPT by default."""
    rules = rules or default_rules()
    f = normalise(facts, rules)
    for origins, regime_rules in rules.regimes:
        if f["origin"] not in origins:
            continue
        for rule in regime_rules:
            if rule.determination_only:
                continue
            if rule.match is None or rule.match(f):
                found = _decision(rule, f, facts, rules)
                if rule.adds_to_general:
                    assumed: dict[str, Any] = {rule.adds_to_general: True}
                    general = decide(replace(facts, **assumed), rules)
                    return _on_top_of(found, general)
                return found
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
        basis = basis.format(**_labels(f, rules))
    alternatives = tuple(
        Alternative(alt.outcome, alt.note)
        for alt in (rules.alternatives[name] for name in rule.alternatives)
        if alt.match is None or alt.match(f)
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
        awaits=rule.awaits,
    )


def _on_top_of(sector: Decision, general: Decision) -> Decision:
    """A sector overlay adds to the general regime, never replaces it (crossborder-rules.md M2):
    the general decision's mechanism, evidence and obligations stay required, and the outcome
    is the stricter of the two."""
    outcome = max(sector.outcome, general.outcome, key=STRICTNESS.__getitem__)
    return replace(
        sector,
        outcome=outcome,
        legal_basis=f"{sector.legal_basis} (in addition to the general regime): "
        f"{general.rule_id} {general.legal_basis}",
        obligations=tuple(dict.fromkeys(general.obligations + sector.obligations)),
        evidence_required=general.evidence_required,
        alternatives=general.alternatives,
        counter=general.counter,
        considered=(
            {
                "declared": "general regime, sector approval assumed",
                "outcome": general.outcome,
                "rule_id": general.rule_id,
            },
        ),
        awaits=sector.awaits or general.awaits,
    )


class NotDeterminable(ValueError):
    """A determination names a basis the reviewed rule does not allow; ``field`` says which input."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def determined_as(decision: Decision, basis_rule_id: str | None, rules: RuleSet | None = None) -> Decision:
    """The final decision a reviewer's determination makes of a HUMAN_REVIEW (architecture.md
    invariant 8): the named rule, one the reviewed rule lists in ``determinable_as``, whose
    conditions (if it has any) hold on the same facts. Any other decision is returned unchanged,
    and a basis named for it is refused."""
    rules = rules or default_rules()
    reviewed = rules.rule(decision.rule_id)
    if decision.outcome != "HUMAN_REVIEW":
        if basis_rule_id not in (None, decision.rule_id):
            raise NotDeterminable(
                "basis_rule_id",
                f"the decision is {decision.rule_id} {decision.outcome}; no other basis can be named",
            )
        return decision
    allowed = reviewed.determinable_as if reviewed is not None else ()
    if not allowed:
        raise NotDeterminable(
            "basis_rule_id",
            f"{decision.rule_id} ({decision.legal_basis}) names no basis a reviewer may determine: "
            "reject the request, or amend the rules",
        )
    if basis_rule_id is None:
        raise NotDeterminable(
            "basis_rule_id", f"{decision.rule_id} is determined by naming one of {', '.join(allowed)}"
        )
    if basis_rule_id not in allowed:
        raise NotDeterminable(
            "basis_rule_id",
            f"{decision.rule_id} may be determined as {', '.join(allowed)}, not {basis_rule_id}",
        )
    target = rules.rule(basis_rule_id)
    assert target is not None  # parse_rules checked determinable_as
    f = decision.facts
    if target.match is not None and not target.match(f):
        raise NotDeterminable(
            "basis_rule_id", f"the conditions of {basis_rule_id} do not hold for this transfer"
        )
    # The review may come from declared facts (a place of collection): the mechanism the other
    # fact sets need stays needed, and one determination names one mechanism, so it must serve both.
    for other in decision.considered:
        needed = tuple(other.get("evidence_required") or ())
        if needed and other.get("outcome") != "HUMAN_REVIEW" and not set(needed) & set(target.evidence):
            raise NotDeterminable(
                "basis_rule_id",
                f"{other.get('rule_id')} ({other.get('declared')}) needs {' or '.join(needed)}, which "
                f"{basis_rule_id} does not provide: this transfer cannot be determined on one mechanism",
            )
    basis = target.legal_basis
    if "{" in basis:
        basis = basis.format(**_labels(f, rules))
    return replace(
        decision,
        outcome=target.outcome,
        rule_id=target.id,
        legal_basis=basis,
        obligations=tuple(dict.fromkeys(decision.obligations + target.obligations)),
        evidence_required=target.evidence,
        note=target.note,
        awaits=None,
        considered=(
            *tuple(decision.considered),
            {
                "declared": "reviewer's determination",
                "outcome": decision.outcome,
                "rule_id": decision.rule_id,
            },
        ),
    )


def decide_strictest(
    known: TransferFacts, declared: Sequence[tuple[str, TransferFacts]] = (), rules: RuleSet | None = None
) -> Decision:
    """Decide under the platform's own facts and under each declared variant; keep the strictest.

    Invariant 6 of architecture.md: what a party declares (a processing location, a place of
    collection) is evaluated beside what the platform knows and can only make the outcome
    stricter. On a tie the platform's own decision stands. Every variant is recorded in
    ``considered`` with the fact it changed and its outcome.
    """
    rules = rules or default_rules()
    own = decide(known, rules)
    if not declared:
        return own
    decisions = [("platform's own facts", own)] + [(label, decide(facts, rules)) for label, facts in declared]
    best = max((d for _, d in decisions), key=lambda d: STRICTNESS[d.outcome])  # first wins a tie
    # A stricter review outcome must not drop a mechanism another set of facts requires: the
    # strictest mechanism among them stays required (ASSESSMENT over SCC/CERT over GBA SC).
    with_evidence = [d for _, d in decisions if d.evidence_required]
    evidence = (
        max(with_evidence, key=lambda d: STRICTNESS[d.outcome]).evidence_required if with_evidence else ()
    )
    obligations = tuple(dict.fromkeys(o for _, d in decisions for o in d.obligations))
    considered = tuple(best.considered) + tuple(
        {
            "declared": label,
            "outcome": d.outcome,
            "rule_id": d.rule_id,
            "evidence_required": list(d.evidence_required),
            "origin": d.facts["origin"],
        }
        for label, d in decisions
    )
    counters = {d.counter for _, d in decisions}
    counter = "mechanism" if "mechanism" in counters else best.counter
    return replace(
        best,
        evidence_required=best.evidence_required or evidence,
        obligations=obligations,
        considered=considered,
        counter=counter,
        awaits=best.awaits,
    )


def gba_sc_findings(
    decision: Decision, onward_outside_gba: bool, rules: RuleSet | None = None
) -> tuple[str, ...]:
    """Why a GBA standard contract cannot carry this transfer (empty when it can), by the rules' conditions.

    Both parties must be inside the area the rules name, and the recipient clause forbids
    onward provision outside it (GBA SC Guidelines; the contract's recipient clause).
    """
    if decision.outcome != "GBA_SC":
        return ()
    rules = rules or default_rules()
    findings: list[str] = []
    if onward_outside_gba and not rules.gba_sc_onward_outside_area:
        findings.append("GBA standard contract: onward transfer outside the Greater Bay Area is not allowed")
    origin, dest = decision.facts["origin"], decision.facts["dest"]
    if origin in rules.gba_sc_area and dest not in rules.gba_sc_area:
        findings.append("GBA standard contract: the recipient must be inside the Greater Bay Area")
    return tuple(findings)
