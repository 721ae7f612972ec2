"""Full-text search over messages and titles (chat.search_index: GIN indexes on PostgreSQL, FTS5
tables kept by triggers on SQLite), and the `loadtest` source of conversations."""

from django.db import migrations, models


def install_search(apps, schema_editor):
    from chat import search_index

    search_index.install(schema_editor.connection)


def uninstall_search(apps, schema_editor):
    from chat import search_index

    search_index.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0009_conversation_source_openai"),
    ]

    # The constraint first: on SQLite it remakes chat_conversation, which would drop the
    # triggers made after it.
    operations = [
        migrations.RemoveConstraint(
            model_name="conversation",
            name="chat_conv_source_valid",
        ),
        migrations.AlterField(
            model_name="conversation",
            name="source",
            field=models.CharField(
                choices=[
                    ("chat", "Chat (web, REST, WebSocket)"),
                    ("ollama", "Ollama-compatible API"),
                    ("openai", "OpenAI-compatible API"),
                    ("loadtest", "Load test"),
                ],
                default="chat",
                max_length=10,
            ),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.CheckConstraint(
                condition=models.Q(("source__in", ["chat", "ollama", "openai", "loadtest"])),
                name="chat_conv_source_valid",
            ),
        ),
        migrations.RunPython(install_search, uninstall_search, elidable=False),
    ]
