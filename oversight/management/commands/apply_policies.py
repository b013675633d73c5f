from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydantic import ValidationError

from oversight import actions, hosted, people_audit
from oversight.errors import ActionError
from oversight.schemas import SystemIn


class Command(BaseCommand):
    help = "Create or update systems and their policies from a YAML or JSON file (policies as code)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="YAML/JSON: a list of systems, or {systems: [...]}")
        parser.add_argument("--reason", default="", help="why (goes to the audit log)")
        parser.add_argument("--by", default="", metavar="PERSON",
                            help="the person the audit log names (default: the operating-system user)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            person = people_audit.command_person(opts["by"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        path = Path(opts["file"])
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CommandError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
        entries = data.get("systems") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise CommandError(f"{path}: expected a list of systems (or a mapping with a 'systems' list)")
        validated = []
        models: list[list[dict[str, Any]]] = []
        known = set(SystemIn.model_fields) | {"models"}
        for i, entry in enumerate(entries):
            unknown = sorted(set(entry) - known) if isinstance(entry, dict) else []
            if unknown:
                raise CommandError(
                    f"{path}: systems[{i}]: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))} "
                    "(nothing was applied)"
                )
            listed: Any = []
            if isinstance(entry, dict):
                entry = dict(entry)
                listed = entry.pop("models", None) or []
            if not isinstance(listed, list):
                raise CommandError(f"{path}: systems[{i}].models: expected a list of hosted models "
                                   "(nothing was applied)")
            try:
                validated.append(SystemIn.model_validate(entry))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = "".join(f".{p}" for p in first["loc"])
                msg = str(first["msg"]).removeprefix("Value error, ")
                raise CommandError(f"{path}: systems[{i}]{where}: {msg} (nothing was applied)") from exc
            for j, m in enumerate(listed):
                try:
                    checked = hosted.validated(m if isinstance(m, dict) else {})
                    if isinstance(checked, hosted.HostedModelIn) and checked.kind == "python":
                        hosted.check_target(checked.kind, checked.target)
                except ActionError as exc:
                    raise CommandError(
                        f"{path}: systems[{i}].models[{j}]: {exc.message} (nothing was applied)") from exc
            models.append(listed)
        reason = opts["reason"] or f"apply_policies {path.name}"
        for payload, listed in zip(validated, models, strict=True):
            system, what = actions.apply_policy(person, payload.model_dump(exclude_unset=True), reason)
            self.stdout.write(f"{system.slug}: {what} (policy v{system.policy_version})")
            for m in listed:
                try:
                    done = hosted.apply(person, system.slug, m, reason)
                    self.stdout.write(f"{system.slug}: model {m['name']}: {done}")
                except ActionError as exc:
                    raise CommandError(f"{system.slug}: model {m['name']}: {exc.message}") from exc
