"""Alembic environment: runs migrations on the URL the caller put in the config (see shared/store/db.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from shared.store.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
if url.startswith("postgresql://"):
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
