from django.apps import AppConfig


class ReviewQueueConfig(AppConfig):
    name = "reviewqueue"
    verbose_name = "Review queue"

    def ready(self) -> None:
        from oversight import hooks
        from reviewqueue.actions import close_audit_items, needs_review, review_items_for

        hooks.register_decision_rows(review_items_for, needs_review)
        hooks.register_overridden(close_audit_items)
