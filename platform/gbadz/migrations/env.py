"""Alembic environment: runs on the connection gbadz.db hands over, or on the configured URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

import gbadz.access.models
import gbadz.analysis.models
import gbadz.audit
import gbadz.catalog.models
import gbadz.compliance.models
import gbadz.console.models
import gbadz.identity.models
import gbadz.translog.models  # noqa: F401
from gbadz.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
