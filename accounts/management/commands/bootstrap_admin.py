from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from accounts import admin_password, services
from accounts.admin_password import DEVELOPMENT_ADMIN_EMAIL
from config.env import Env


class Command(BaseCommand):
    help = (
        "Create or update the first admin from ADMIN_EMAIL and ADMIN_PASSWORD. In development, "
        "with none given, creates admin@localhost with a generated password printed once."
    )

    def handle(self, *args, **options):
        env = Env()
        email = env.str("ADMIN_EMAIL")
        password = env.raw("ADMIN_PASSWORD")
        if email is None:
            if settings.PRODUCTION:
                raise CommandError("Set ADMIN_EMAIL (and ADMIN_PASSWORD) to create the admin.")
            email = DEVELOPMENT_ADMIN_EMAIL
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"ADMIN_EMAIL={email!r} is not a valid email address") from None
        if password is not None:
            try:
                validate_password(password, get_user_model()(email=email))
            except ValidationError as exc:
                raise CommandError(
                    "ADMIN_PASSWORD is too weak: " + " ".join(exc.messages)
                ) from None

        result = services.bootstrap_admin(email=email, password=password)
        if result.created and result.password_generated:
            kept = admin_password.remember(result.password_generated)
            where = f"kept in {kept} for the start-up banner" if kept else "shown once: note it now"
            self.stdout.write(
                self.style.SUCCESS(f"Created admin {result.email}")
                + f"\n  password: {result.password_generated}\n"
                f"  ({where}; `make reset-admin-password` sets a new one)"
            )
        elif result.created:
            self.stdout.write(self.style.SUCCESS(f"Created admin {result.email}"))
        elif password:
            self.stdout.write(f"Updated admin {result.email} (password set from ADMIN_PASSWORD)")
        else:
            self.stdout.write(f"Admin {result.email} already exists; left unchanged")
