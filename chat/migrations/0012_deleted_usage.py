# The daily budget's ledger of deleted replies' tokens (chat.budgets, chat.models.UsageCarry).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0011_share_links"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageCarry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("tokens", models.BigIntegerField(default=0)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="usage_carries",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "deleted usage",
                "verbose_name_plural": "deleted usage",
                "ordering": ["-day", "user_id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user", "day"), name="chat_usagecarry_user_day"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("tokens__gte", 0)),
                        name="chat_usagecarry_tokens_non_negative",
                    ),
                ],
            },
        ),
    ]
