from django.apps import AppConfig


class OversightConfig(AppConfig):
    name = "oversight"
    verbose_name = "Oversight core"

    def ready(self) -> None:
        from oversight import people_audit

        people_audit.connect()  # account and role changes, logins: into the audit log
        people_audit.connect_lockouts()
