"""pruning indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERED = sa.text('delivered_at IS NOT NULL')
FIRED = sa.text('fired_at IS NOT NULL')


def upgrade() -> None:
    # The pruner (flows/retention.py) deletes the oldest delivered replies and fired timers: a range scan of
    # these, which hold only such rows. processed_updates has had its index on processed_at since 0001.
    op.create_index('ix_outbox_delivered', 'outbox', ['delivered_at'], unique=False,
                    sqlite_where=DELIVERED, postgresql_where=DELIVERED)
    op.create_index('ix_timers_fired', 'timers', ['fired_at'], unique=False,
                    sqlite_where=FIRED, postgresql_where=FIRED)


def downgrade() -> None:
    op.drop_index('ix_timers_fired', table_name='timers')
    op.drop_index('ix_outbox_delivered', table_name='outbox')
