from django.urls import path
from rest_framework_simplejwt.views import TokenRefreshView, TokenVerifyView

from accounts import api

urlpatterns = [
    path("token/", api.ThrottledTokenObtainPairView.as_view(), name="token_obtain"),
    path("token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("token/verify/", TokenVerifyView.as_view(), name="token_verify"),
    path("logout/", api.LogoutView.as_view(), name="api_logout"),
    path("me/", api.MeView.as_view(), name="me"),
    path("register/", api.RegisterView.as_view(), name="register"),
]
