"""Alembic environment: migrations run on the connection the store hands over
(`config.attributes["connection"]`), never on one of their own."""

from alembic import context

from firmware_host.visits.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
