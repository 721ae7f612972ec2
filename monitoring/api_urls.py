from django.urls import path

from monitoring import api

urlpatterns = [
    path("latest/", api.LatestView.as_view(), name="monitoring_latest"),
    path("series/", api.SeriesView.as_view(), name="monitoring_series"),
    path("summary/", api.SummaryView.as_view(), name="monitoring_summary"),
    path("requests/", api.RequestListView.as_view(), name="monitoring_requests"),
    path("throughput/", api.ThroughputView.as_view(), name="monitoring_throughput"),
    path("now/", api.NowView.as_view(), name="monitoring_now"),
    path("now/cancel/", api.NowCancelView.as_view(), name="monitoring_now_cancel"),
]
