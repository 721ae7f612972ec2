"""The admin shows samples read-only; only superusers may delete."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from monitoring.models import GpuSample, HostSample

from .conftest import make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def sample():
    return make_sample(
        "gpu-box",
        timezone.now() - timedelta(minutes=1),
        ram_used_mb=1234.0,
        gpus=[{"index": 0, "uuid": "GPU-x", "name": "RTX 4090", "memory_used_mb": 10.0}],
        models=[{"ollama_url": "http://o", "model": "llama3.2:3b", "size": 1, "size_vram": 1}],
    )


@pytest.fixture
def superuser_client(make_user):
    client = Client()
    client.force_login(make_user("root@example.com", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def viewer_client(make_user):
    """Staff with the view permissions only (not a superuser)."""
    viewer = make_user("ops@example.com", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_hostsample", "view_gpusample", "view_loadedmodelsample"]
        )
    )
    client = Client()
    client.force_login(viewer)
    return client


@pytest.mark.parametrize("model", ["hostsample", "gpusample", "loadedmodelsample"])
def test_changelists_with_filters_and_date_hierarchy(superuser_client, sample, model):
    response = superuser_client.get(f"/admin/monitoring/{model}/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "gpu-box" in content
    assert response.context["cl"].date_hierarchy == "taken_at"
    assert "taken_at__day=" in content  # the date hierarchy's links (one year: down to days)
    assert response.context["cl"].has_filters
    assert f"/admin/monitoring/{model}/add/" not in content


def test_filter_by_host_and_gpu(superuser_client, sample):
    make_sample("other-box", timezone.now(), gpus=[{"index": 0, "name": "A100"}])
    by_host = superuser_client.get("/admin/monitoring/hostsample/", {"host": "other-box"})
    assert [s.host for s in by_host.context["cl"].result_list] == ["other-box"]
    by_gpu = superuser_client.get("/admin/monitoring/gpusample/", {"name": "RTX 4090"})
    assert [g.name for g in by_gpu.context["cl"].result_list] == ["RTX 4090"]
    hosts_with_gpu = superuser_client.get("/admin/monitoring/hostsample/", {"gpus__name": "A100"})
    assert [s.host for s in hosts_with_gpu.context["cl"].result_list] == ["other-box"]


def test_no_add_and_no_change(superuser_client, sample):
    assert superuser_client.get("/admin/monitoring/hostsample/add/").status_code == 403
    change_url = f"/admin/monitoring/hostsample/{sample.pk}/change/"
    page = superuser_client.get(change_url)
    assert page.status_code == 200  # a view-only page
    assert page.context["has_change_permission"] is False
    assert 'name="_save"' not in page.content.decode()
    assert "RTX 4090" in page.content.decode()  # the GPU inline
    posted = superuser_client.post(change_url, {"host": "renamed"})
    assert posted.status_code == 403
    sample.refresh_from_db()
    assert sample.host == "gpu-box"


def test_superuser_may_delete(superuser_client, sample):
    response = superuser_client.post(
        f"/admin/monitoring/hostsample/{sample.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not HostSample.objects.exists()
    assert not GpuSample.objects.exists()


def test_staff_viewer_sees_but_cannot_delete(viewer_client, sample):
    assert viewer_client.get("/admin/monitoring/hostsample/").status_code == 200
    assert viewer_client.get(f"/admin/monitoring/hostsample/{sample.pk}/change/").status_code == 200
    response = viewer_client.post(
        f"/admin/monitoring/hostsample/{sample.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert HostSample.objects.filter(pk=sample.pk).exists()
