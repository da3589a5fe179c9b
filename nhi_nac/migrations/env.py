"""Alembic environment: runs on the connection handed over by Database.upgrade()."""

from alembic import context

from nhi_nac.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with 'nhi-nac init', which supplies the connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
