"""Recompute the audit log's hash chain and say whether it holds, or where it first breaks."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from oversight import audit


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain (streamed, in id order); exit non-zero at the first broken link."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000, help="rows fetched per round trip")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit.verify_log(chunk_size=options["chunk_size"])
        if not report.intact:
            raise CommandError(report.message)
        self.stdout.write(report.message)
