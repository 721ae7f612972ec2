from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_keep_search_triggers, sender=self)


def _keep_search_triggers(using: str = "default", **kwargs: object) -> None:
    # SQLite drops a table's triggers when a migration remakes it: put the search index's back.
    from django.db import connections

    from chat.search_index import ensure_sqlite_triggers

    ensure_sqlite_triggers(connections[using])
