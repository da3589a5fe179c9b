"""The Alembic migrations build exactly the schema the models declare, on both backends.

A column, index or constraint added to a model without a migration (or the reverse)
would work in one place and fail on an upgraded production database; autogenerate's
comparison against a freshly migrated database names the difference.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nhi_nac.storage.db import Database
from nhi_nac.storage.models import Base


async def test_migrations_match_the_models(database: Database) -> None:
    differences = await database.run_read(
        lambda conn: compare_metadata(MigrationContext.configure(conn), Base.metadata))
    assert differences == []
    assert await database.current_revision() is not None
