"""one running broadcast

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00.000000
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
    # not see the first one's (PostgreSQL's READ COMMITTED).
    op.create_index('ux_broadcasts_one_running', 'broadcasts', ['status'], unique=True,
                    sqlite_where=RUNNING, postgresql_where=RUNNING)


def downgrade() -> None:
    op.drop_index('ux_broadcasts_one_running', table_name='broadcasts')
