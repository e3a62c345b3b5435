"""one running broadcast

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    # At most one row is running: a second writer's draft → running fails here even where its transaction could
    # not see the first one's (PostgreSQL's READ COMMITTED). Should a database hold several running already, the
    # latest keeps running and the others are cancelled, so the index can be built.
    op.execute("UPDATE broadcasts SET status = 'cancelled', finished_at = CURRENT_TIMESTAMP "
               "WHERE status = 'running' AND id < (SELECT MAX(id) FROM broadcasts WHERE status = 'running')")
    op.create_index('ux_broadcasts_one_running', 'broadcasts', ['status'], unique=True,
                    sqlite_where=RUNNING, postgresql_where=RUNNING)


def downgrade() -> None:
    op.drop_index('ux_broadcasts_one_running', table_name='broadcasts')
