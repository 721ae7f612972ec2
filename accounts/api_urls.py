from django.urls import path

from accounts import api

urlpatterns = [
    path("token/", api.ThrottledTokenObtainPairView.as_view(), name="token_obtain"),
    path("token/refresh/", api.TokenRefreshView.as_view(), name="token_refresh"),
    path("token/verify/", api.TokenVerifyView.as_view(), name="token_verify"),
    path("logout/", api.LogoutView.as_view(), name="api_logout"),
    path("me/", api.MeView.as_view(), name="me"),
    path("register/", api.RegisterView.as_view(), name="register"),
    path("keys/", api.ApiKeyListView.as_view(), name="api_keys"),
    path("keys/<int:pk>/", api.ApiKeyDetailView.as_view(), name="api_key"),
]
