from django.apps import AppConfig


class ReviewQueueConfig(AppConfig):
    name = "reviewqueue"
    verbose_name = "Review queue"

    def ready(self) -> None:
        from oversight import hooks
        from reviewqueue.actions import enqueue_decisions, needs_review

        hooks.register_decision_sink(enqueue_decisions, needs_review)
