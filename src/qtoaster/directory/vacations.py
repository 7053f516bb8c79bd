"""Users' vacation autoresponders in the directory: read, set, switch off.

The small API the CLI (``qtoaster user vacation``) and the web admin use; local delivery
reads the setting through ``Directory.resolve`` (``Recipient.vacation``), so answering
mail costs no extra lookup once the recipient is cached.  What the setting does is in
docs/vacation.md; who was answered when is not here but beside the user's Maildir
(delivery/vacationstate.py), written by local delivery alone.

Invariants: at most one row per user (its primary key), deleted with the user; every value
stored went through :func:`~qtoaster.directory.model.valid_vacation`.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection, select

from qtoaster.directory.base import DirectoryBase, database_errors
from qtoaster.directory.model import Vacation, valid_vacation
from qtoaster.directory.schema import vacations


def read_vacation(conn: Connection, user_id: int) -> Vacation | None:
    """The stored setting of the user ``user_id``, enabled or not, or None."""
    row = conn.execute(select(vacations).where(vacations.c.user_id == user_id)).first()
    if row is None:
        return None
    return Vacation(
        enabled=bool(row.enabled),
        subject=row.subject,
        body=row.body,
        starts=row.starts,
        ends=row.ends,
        period=int(row.period),
    )


class VacationOps(DirectoryBase):
    def vacation(self, address: str) -> Vacation | None:
        """The vacation setting of the user ``address`` (DirectoryError if unknown), or
        None if it never had one."""
        with database_errors(), self._engine.connect() as conn:
            return read_vacation(conn, int(self._user_row(conn, address).id))

    def set_vacation(self, address: str, vacation: Vacation) -> Vacation:
        """Store ``vacation`` as the user's setting (replacing any); DirectoryError if it
        is not valid or the user is unknown."""
        valid_vacation(vacation)
        values = {
            "enabled": vacation.enabled,
            "subject": vacation.subject,
            "body": vacation.body,
            "starts": vacation.starts,
            "ends": vacation.ends,
            "period": vacation.period,
        }
        with self._write() as conn:
            user_id = int(self._user_row(conn, address).id)
            done = conn.execute(
                vacations.update().where(vacations.c.user_id == user_id).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(vacations.insert().values(user_id=user_id, **values))
        return vacation

    def vacation_off(self, address: str) -> Vacation | None:
        """Stop answering; the text stays for the next time.  The setting now (None if the
        user never had one)."""
        current = self.vacation(address)
        if current is None or not current.enabled:
            return current
        return self.set_vacation(address, replace(current, enabled=False))
