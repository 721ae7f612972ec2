from django.urls import path

from uploads import api

app_name = "uploads_api"

urlpatterns = [
    path("", api.UploadListCreateView.as_view(), name="list"),
    path("usage/", api.UsageView.as_view(), name="usage"),
    path("<uuid:pk>/", api.UploadDetailView.as_view(), name="detail"),
    path("<uuid:pk>/download/", api.UploadDownloadView.as_view(), name="download"),
]
