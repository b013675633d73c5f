"""``manage.py migrate``: Django's own, logged in as the database's owner, then the app role's privileges.

``DATABASE_URL`` is the app role's (settings.py): it reads and writes the tables but owns none, so it
cannot migrate. This command takes the place of Django's (``oversight`` is an installed app, so
``call_command("migrate")`` finds it too: ``run_demo``, pytest-django's test database, the benches)
and, for the run, logs in as ``DATABASE_OWNER_URL``'s user on the same database (``DATABASE_URL``'s,
or the test database made from it), with no statement timeout. After migrating it grants the app role
(``DATABASE_URL``'s user) exactly its privileges again (``oversight.embedded.app_privileges``): the
tables this run made included, the audit log narrowed to SELECT and INSERT.

With one role (no ``DATABASE_OWNER_URL``) it migrates as that role, grants nothing, and says that the
app then owns the audit log (README, "Database roles").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from oversight import embedded

LOGIN = ("USER", "PASSWORD", "HOST", "PORT")


def _reconnect(connection: BaseDatabaseWrapper, values: dict[str, Any]) -> None:
    connection.close()
    close_pool = getattr(connection, "close_pool", None)  # the pool keeps connections of the old login
    if close_pool is not None:
        close_pool()
    connection.settings_dict.update(values)


@contextmanager
def owner_login(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """``connection`` logs in as the owner (settings.DATABASE_OWNER_LOGIN) until the block ends."""
    before = {key: connection.settings_dict[key] for key in LOGIN}
    owner = {key: settings.DATABASE_OWNER_LOGIN[key] for key in LOGIN}
    if before == owner:
        yield
        return
    if connection.in_atomic_block:
        raise CommandError("migrate logs in as the database's owner: it cannot run inside a transaction")
    options = connection.settings_dict["OPTIONS"]
    no_timeout = re.sub(r"statement_timeout=\d+", "statement_timeout=0", str(options.get("options", "")))
    _reconnect(connection, {**owner, "OPTIONS": {**options, "options": no_timeout}})
    try:
        yield
    finally:
        _reconnect(connection, {**before, "OPTIONS": options})


class Command(DjangoMigrate):
    help = (
        "Django's migrate, logged in as the database's owner (DATABASE_OWNER_URL); then grants the app role "
        "(DATABASE_URL's user) its privileges: read and write the tables, only SELECT and INSERT the audit log."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        with owner_login(connection):
            super().handle(*args, **options)
            if not (options.get("plan") or options.get("check_unapplied")):
                self.grant(connection, options["verbosity"])

    def grant(self, connection: BaseDatabaseWrapper, verbosity: int) -> None:
        app = settings.DATABASE_APP_ROLE
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            (owner,) = cursor.fetchone()
            app_row = None
            if app:
                cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [app])
                app_row = cursor.fetchone()
        if not app:
            if verbosity >= 1:
                self.stderr.write(self.style.WARNING(
                    f"One database role ({owner}): the app owns the audit log, so it could TRUNCATE it or switch "
                    "its trigger off. Give the app a role of its own: DATABASE_URL for the app, DATABASE_OWNER_URL "
                    "for migrations (manage.py setup_db_roles; README, \"Database roles\")."
                ))
            return
        if app_row is None:
            raise CommandError(f"the app's role {app} (DATABASE_URL's user) does not exist: make it with "
                               "manage.py setup_db_roles (README, \"Database roles\")")
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            embedded.grant_app_role(cursor, owner, app)
        if app_row[0]:
            self.stderr.write(self.style.WARNING(
                f"The app's role {app} is a superuser: it can still switch the audit log's protection off."))
        elif verbosity >= 1:
            self.stdout.write(f"Privileges: {app} reads and writes the tables and may only SELECT and INSERT the "
                              f"audit log; {owner} owns them.")
