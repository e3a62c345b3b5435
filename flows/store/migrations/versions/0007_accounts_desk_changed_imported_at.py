"""accounts: desk_changed_at and imported_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import flows.store.types

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The CSV import keeps what the desk changed after the row was last imported (flows/accounts_csv.py).
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('desk_changed_at', flows.store.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('imported_at', flows.store.types.UTCDateTime(timezone=True), nullable=True))
    # Older changes were not recorded, but only the desk ever locks withdrawals: a row with a lock was changed by
    # the desk (most likely with its 2FA reset), so the next import keeps it rather than undo it.
    op.execute('UPDATE accounts SET desk_changed_at = updated_at WHERE withdrawals_locked_until IS NOT NULL')


def downgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('imported_at')
        batch_op.drop_column('desk_changed_at')
