"""Transfer decisions per second on one core, against the floor of building the same facts.

The floor is constructing and validating the same TransferFacts objects without deciding;
the goal (issue 7) is at least 100,000 decisions/s. For scale: on these machines cedarpy
makes 18,000-25,000 decisions/s and the best Rego interpreter 80,000-145,000 (architecture.md).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace

from gbadz.law.engine import TransferFacts, decide
from gbadz.law.rules import default_rules
from gbadz.vocabulary import JURISDICTIONS, PURPOSES

N = 200_000
ROUNDS = 3


def workload() -> list[TransferFacts]:
    rng = random.Random(42)
    base = TransferFacts(origin="CN-SZ", dest="HK", has_pi=True)
    facts = []
    for _ in range(2_000):
        has_pi = rng.random() < 0.8
        facts.append(
            replace(
                base,
                origin=rng.choice(JURISDICTIONS),
                dest=rng.choice(JURISDICTIONS),
                category=rng.choice(["general"] * 8 + ["important", "core"]),
                has_pi=has_pi,
                has_spi=has_pi and rng.random() < 0.3,
                pi_ytd_after=rng.randrange(0, 2_000_000),
                spi_ytd_after=rng.randrange(0, 30_000),
                recipient_gba_registered=rng.random() < 0.7,
                gba_sc_opt_in=rng.random() < 0.4,
                exporter_ciio=rng.random() < 0.05,
                purpose=rng.choice(PURPOSES),
            )
        )
    return facts


def main() -> None:
    rules = default_rules()
    facts = workload()
    batch = (facts * (N // len(facts) + 1))[:N]

    def run_decide() -> float:
        started = time.perf_counter()
        for f in batch:
            decide(f, rules)
        return time.perf_counter() - started

    def run_floor() -> float:
        started = time.perf_counter()
        for f in batch:
            f.validate()
        return time.perf_counter() - started

    ours = statistics.median(run_decide() for _ in range(ROUNDS))
    floor = statistics.median(run_floor() for _ in range(ROUNDS))
    outcomes: dict[str, int] = {}
    for f in facts:
        o = decide(f, rules).outcome
        outcomes[o] = outcomes.get(o, 0) + 1
    print(f"{N:,} decisions over {len(facts):,} distinct fact sets, one core, median of {ROUNDS}")
    print(f"  validate facts only (floor) {N / floor:10,.0f} /s")
    print(
        f"  full decision               {N / ours:10,.0f} /s   ({ours / N * 1e6:.1f} µs each; goal: at least 100,000/s)"
    )
    print(f"  outcome mix: {dict(sorted(outcomes.items()))}")


if __name__ == "__main__":
    main()
