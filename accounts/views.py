from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import EmailLoginForm, SignupForm
from accounts.models import MAX_API_KEYS_PER_USER
from accounts.throttling import login_wait_seconds


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = EmailLoginForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        wait = login_wait_seconds(request)
        if wait is not None:
            form = self.get_form()
            form.errors.clear()
            response = render(
                request,
                self.template_name,
                {
                    "form": form,
                    "throttled": True,
                    "retry_after": wait,
                    "registration_enabled": settings.REGISTRATION_ENABLED,
                },
                status=429,
            )
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)


class LogoutView(auth_views.LogoutView):
    pass


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form):
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)


@csrf_protect
@require_http_methods(["GET", "POST"])
def signup(request):
    if not settings.REGISTRATION_ENABLED:
        raise Http404("Registration is disabled")
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def admin_login(request, extra_context=None):
    if request.user.is_authenticated and not request.user.is_staff:
        # Where the admin sends a signed-in user who is not staff: a page that says so, in the
        # site's style. Not an exception: nothing went wrong, so no traceback in the log.
        response = render(request, "403.html", {"admin_denied": True}, status=403)
        response._has_been_logged = True  # type: ignore[attr-defined]  # Django's own flag
        return response
    return redirect_to_login(request.GET.get("next") or reverse("admin:index"))


@login_required
@require_GET
def api_keys(request):
    """The API keys page; listing, creating and revoking go through /api/auth/keys/ from JS."""
    return render(request, "accounts/keys.html", {"max_keys": MAX_API_KEYS_PER_USER})
