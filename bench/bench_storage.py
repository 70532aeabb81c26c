"""Object storage: gbadz's ObjectStore against the raw minio SDK, same server, same bytes."""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from minio import Minio

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.embedded import EmbeddedServices

SIZE = 64 * 1024 * 1024
ROUNDS = 5


def _best(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    data = os.urandom(SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        services = EmbeddedServices(Path(tmp), bucket_settings=S3Settings(curated_bucket="bench-curated"))
        state, _ = services.up(with_database=False)
        assert state.s3 is not None
        try:
            settings = services.s3_settings(state.s3)
            store = storage.ObjectStore(storage.make_client(settings), settings)
            raw = Minio(
                settings.endpoint_url.split("://")[1],  # type: ignore[union-attr]
                access_key=settings.access_key,
                secret_key=settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
                secure=False,
            )
            bucket = settings.curated_bucket

            def raw_put() -> None:
                raw.put_object(bucket, "bench/raw", io.BytesIO(data), len(data))

            def raw_get() -> None:
                response = raw.get_object(bucket, "bench/raw")
                response.read()
                response.close()
                response.release_conn()

            ours_put = _best(lambda: store.put_bytes(bucket, "bench/ours", data))
            floor_put = _best(raw_put)
            ours_get = _best(lambda: store.get_bytes(bucket, "bench/ours"))
            floor_get = _best(raw_get)
        finally:
            services.down()
    mb = SIZE / 1e6
    print(f"object size {mb:.0f} MB, median of {ROUNDS}")
    print(
        f"PUT  gbadz {mb / ours_put:8.0f} MB/s   raw minio {mb / floor_put:8.0f} MB/s   ratio {floor_put / ours_put:.2f}x of floor"
    )
    print(
        f"GET  gbadz {mb / ours_get:8.0f} MB/s   raw minio {mb / floor_get:8.0f} MB/s   ratio {floor_get / ours_get:.2f}x of floor"
    )


if __name__ == "__main__":
    main()
