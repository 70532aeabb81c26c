"""Seeded generators for the sample datasets in contracts/ (synthetic people, no downloads).

``generate(contract_id, rows, seed)`` returns an Arrow table that satisfies the contract;
``corrupt(table, contract_id)`` returns a copy with known violations, for the demo's
rejected upload and for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SURNAMES = np.array(
    [
        "Chan",
        "Wong",
        "Li",
        "Cheung",
        "Lau",
        "Chen",
        "Zhang",
        "Wang",
        "Liu",
        "Huang",
        "Ho",
        "Leung",
        "Lam",
        "Tang",
        "Ng",
    ]
)
GIVEN = np.array(
    [
        "Wai Ming",
        "Ka Yan",
        "Xiaoming",
        "Mei Ling",
        "Jun",
        "Hui",
        "Tsz Hin",
        "Yuet",
        "Jia Hao",
        "Siu Fong",
        "Wen",
        "Ying",
    ]
)
HK_DISTRICTS = np.array(
    [
        "Central and Western",
        "Wan Chai",
        "Eastern",
        "Southern",
        "Yau Tsim Mong",
        "Sham Shui Po",
        "Kowloon City",
        "Wong Tai Sin",
        "Kwun Tong",
        "Kwai Tsing",
        "Tsuen Wan",
        "Tuen Mun",
        "Yuen Long",
        "North",
        "Tai Po",
        "Sha Tin",
        "Sai Kung",
        "Islands",
    ]
)


def _names(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(np.char.add(np.char.add(rng.choice(SURNAMES, n), " "), rng.choice(GIVEN, n)).tolist())


def _dates(rng: np.random.Generator, n: int, start: date, days: int) -> pa.Array:
    return pa.array(
        (np.datetime64(start) + rng.integers(0, days, n).astype("timedelta64[D]")).astype("datetime64[D]")
    )


def outpatient_visits(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, max(rows // 3, 1), rows)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    return pa.table(
        {
            "visit_id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            "patient_id": pa.array(np.char.add("P", np.char.zfill(patients.astype(str), 9)).tolist()),
            "patient_name": _names(rng, rows),
            "phone": pa.array(
                np.char.add("13", np.char.zfill(rng.integers(0, 10**9, rows).astype(str), 9)).tolist()
            ),
            "birth_year": pa.array(rng.integers(1930, 2024, rows, dtype=np.int64)),
            "gender": pa.array(rng.choice(np.array(["F", "M", "X"]), rows, p=[0.5, 0.49, 0.01]).tolist()),
            "visit_date": _dates(rng, rows, date(2026, 1, 1), 300),
            "clinic_city": pa.array(
                rng.choice(np.array(["Shenzhen", "Dongguan", "Huizhou"]), rows, p=[0.7, 0.2, 0.1]).tolist()
            ),
            "department": pa.array(
                rng.choice(
                    np.array(
                        [
                            "general",
                            "paediatrics",
                            "cardiology",
                            "dermatology",
                            "orthopaedics",
                            "ophthalmology",
                            "ent",
                            "gynaecology",
                        ]
                    ),
                    rows,
                ).tolist()
            ),
            "diagnosis_icd10": pa.array(
                np.char.add(
                    rng.choice(letters, rows), np.char.zfill(rng.integers(0, 100, rows).astype(str), 2)
                ).tolist()
            ),
            "fee_cny": pa.array(np.round(rng.gamma(2.0, 150.0, rows), 2)),
            "insured": pa.array(rng.random(rows) < 0.85),
        }
    )


def deliveries(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    recipients = rng.integers(0, max(rows // 2, 1), rows)
    start = np.datetime64("2026-01-01T00:00:00")
    seconds = rng.integers(0, 300 * 86_400, rows)
    return pa.table(
        {
            "delivery_id": pa.array(
                np.char.add("D", np.char.zfill(np.arange(rows).astype(str), 10)).tolist()
            ),
            "recipient_id": pa.array(np.char.add("R", np.char.zfill(recipients.astype(str), 8)).tolist()),
            "recipient_name": _names(rng, rows),
            "recipient_phone": pa.array(
                (rng.integers(5, 10, rows) * 10**7 + rng.integers(0, 10**7, rows)).astype(str).tolist()
            ),
            "address": pa.array(
                [
                    f"Flat {a}, {b}/F, Block {c}, Harbour Estate"
                    for a, b, c in zip(
                        rng.integers(1, 40, rows),
                        rng.integers(1, 50, rows),
                        rng.integers(1, 12, rows),
                        strict=True,
                    )
                ]
            ),
            "district": pa.array(rng.choice(HK_DISTRICTS, rows).tolist()),
            "parcel_weight_kg": pa.array(np.round(rng.uniform(0.05, 30.0, rows), 2)),
            "dispatched_at": pa.array(
                (np.datetime64(start) + seconds.astype("timedelta64[s]")).astype("datetime64[us]")
            ),
            "status": pa.array(
                rng.choice(
                    np.array(["delivered", "failed_attempt", "returned"]), rows, p=[0.9, 0.08, 0.02]
                ).tolist()
            ),
        }
    )


def visitor_arrivals(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    markets = np.array(
        [
            "Mainland China",
            "Hong Kong",
            "Taiwan",
            "Korea",
            "Japan",
            "Philippines",
            "Thailand",
            "Malaysia",
            "Singapore",
            "USA",
            "Other",
        ]
    )
    ports = np.array(["Border Gate", "HZMB", "Hengqin", "Outer Harbour Ferry", "Taipa Ferry", "Airport"])
    bands = np.array(["0-14", "15-24", "25-44", "45-64", "65+"])
    return pa.table(
        {
            "arrival_date": _dates(rng, rows, date(2020, 1, 1), 2400),
            "source_market": pa.array(
                rng.choice(
                    markets, rows, p=[0.68, 0.18, 0.03, 0.02, 0.01, 0.02, 0.01, 0.01, 0.01, 0.01, 0.02]
                ).tolist()
            ),
            "port_of_entry": pa.array(rng.choice(ports, rows).tolist()),
            "age_band": pa.array(rng.choice(bands, rows).tolist()),
            "arrivals": pa.array(rng.integers(0, 20_000, rows, dtype=np.int64)),
            "same_day_share": pa.array(np.round(rng.uniform(0, 1, rows), 3)),
            "avg_stay_nights": pa.array(np.round(rng.gamma(1.5, 1.0, rows), 2).clip(0, 30)),
        }
    )


GENERATORS: dict[str, Callable[[int, int], pa.Table]] = {
    "sz-hospital-outpatient-visits": outpatient_visits,
    "hk-logistics-deliveries": deliveries,
    "mo-tourism-visitor-arrivals": visitor_arrivals,
}


def generate(contract_id: str, rows: int = 100_000, seed: int = 2026) -> pa.Table:
    try:
        return GENERATORS[contract_id](rows, seed)
    except KeyError:
        raise ValueError(f"no sample generator for {contract_id!r}: one of {', '.join(GENERATORS)}") from None


def corrupt(table: pa.Table, contract_id: str) -> pa.Table:
    """A copy with violations a provider might really upload: nulls, bad codes, out-of-range values."""
    n = table.num_rows
    idx = pa.array(np.arange(n) % 997 == 5)
    if contract_id == "sz-hospital-outpatient-visits":
        table = table.set_column(
            table.schema.get_field_index("fee_cny"), "fee_cny", pc.if_else(idx, -12.5, table["fee_cny"])
        )
        table = table.set_column(
            table.schema.get_field_index("department"),
            "department",
            pc.if_else(idx, "astrology", table["department"]),
        )
        return table.set_column(
            table.schema.get_field_index("patient_id"),
            "patient_id",
            pc.if_else(idx, pa.scalar(None, pa.string()), table["patient_id"]),
        )
    if contract_id == "hk-logistics-deliveries":
        return table.set_column(
            table.schema.get_field_index("district"),
            "district",
            pc.if_else(idx, "Atlantis", table["district"]),
        )
    return table.set_column(
        table.schema.get_field_index("arrivals"), "arrivals", pc.if_else(idx, -1, table["arrivals"])
    )
