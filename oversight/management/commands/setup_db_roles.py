"""``manage.py setup_db_roles``: the owner and app roles on a PostgreSQL server (README, "Database roles").

Run once with a superuser's URL (``--admin-url``; by default ``DATABASE_URL``, which holds the
superuser in a one-role set-up). It makes (or corrects) two roles, gives the database and everything
in its public schema to the owner, grants the app its privileges (``oversight.embedded.setup_roles``)
and prints the two URLs to set: ``DATABASE_URL`` for the app, ``DATABASE_OWNER_URL`` for ``migrate``.
Idempotent. CI runs it with ``--createdb --passwords --env``; the embedded server does the same by
itself when it starts.
"""

from __future__ import annotations

import secrets
import shlex
from typing import Any
from urllib.parse import quote, urlparse, urlunparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import embedded


def role_url(admin_url: str, role: str, password: str | None) -> str:
    """``admin_url`` with ``role`` (and its password) as the user: same server, same database."""
    parsed = urlparse(admin_url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = f"{auth}@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


class Command(BaseCommand):
    help = (
        "Make the database's owner role (migrates) and the app's role (reads and writes the tables, only SELECT "
        "and INSERT on the audit log), hand the database to the owner, and print DATABASE_URL and "
        "DATABASE_OWNER_URL. Needs a superuser's URL (--admin-url, default DATABASE_URL)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-url", default="",
                            help="a superuser's postgresql:// URL naming the database (default: DATABASE_URL)")
        parser.add_argument("--owner", default=embedded.OWNER_ROLE, help="the owner's role (%(default)s)")
        parser.add_argument("--app", default=embedded.APP_ROLE, help="the app's role (%(default)s)")
        parser.add_argument("--passwords", action="store_true",
                            help="give both roles new random passwords (shown in the URLs printed); without, a "
                                 "role keeps its password (a new one has none: trust, peer or cert authentication)")
        parser.add_argument("--createdb", action="store_true",
                            help="for running the tests: the owner may create databases (pytest makes its own) and "
                                 "gets the databases named test_* (an interrupted run's, for it to drop)")
        parser.add_argument("--env", action="store_true",
                            help="print only `export DATABASE_URL=... DATABASE_OWNER_URL=...` lines, for eval")

    def handle(self, *args: Any, **opts: Any) -> None:
        admin_url = opts["admin_url"] or settings.DATABASE_URL
        passwords = {role: secrets.token_urlsafe(24) if opts["passwords"] else None
                     for role in (opts["owner"], opts["app"])}
        try:
            embedded.setup_roles(admin_url, owner=opts["owner"], app=opts["app"], createdb=opts["createdb"],
                                 test_databases=opts["createdb"], owner_password=passwords[opts["owner"]],
                                 app_password=passwords[opts["app"]])
        except (ValueError, PermissionError) as exc:
            raise CommandError(str(exc)) from exc
        app_url = role_url(admin_url, opts["app"], passwords[opts["app"]])
        owner_url = role_url(admin_url, opts["owner"], passwords[opts["owner"]])
        if opts["env"]:
            self.stdout.write(f"export DATABASE_URL={shlex.quote(app_url)}")
            self.stdout.write(f"export DATABASE_OWNER_URL={shlex.quote(owner_url)}")
            return
        database = urlparse(admin_url).path.lstrip("/") or embedded.DB_NAME
        self.stdout.write(
            f"Roles ready on {database}: {opts['owner']} owns it and migrates; {opts['app']} reads and writes the "
            "tables and may only SELECT and INSERT the audit log.\n"
            "Set these (the app's processes need only DATABASE_URL), then run `manage.py migrate`:\n"
            f"DATABASE_URL={app_url}\nDATABASE_OWNER_URL={owner_url}"
        )
        if not opts["passwords"]:
            self.stdout.write("(Add each role's password to its URL if your server asks for one: --passwords "
                              "sets new ones.)")
