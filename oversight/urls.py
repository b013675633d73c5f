"""URL root: pages, the JSON API (/api/v1/), health checks."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from dashboards import hosted_views, rollout_views
from dashboards import views as dash
from dashboards.api import router as monitoring_router
from dashboards.monitoring_api import router as drift_router
from oversight import editorial_views, health, views
from oversight.api import api
from oversight.hosted_api import router as hosted_router
from oversight.rollout_api import router as rollout_router
from oversight.safety_api import router as safety_router
from reviewqueue import decision_views, quality_views
from reviewqueue import views as review
from reviewqueue.api import router as review_router

api.add_router("", review_router)
api.add_router("", drift_router)
api.add_router("", monitoring_router)
api.add_router("", safety_router)
api.add_router("", "oversight.editorial_api.router")
api.add_router("", hosted_router)
api.add_router("", rollout_router)

handler500 = "oversight.middleware.server_error"  # a database that is away: 503 + Retry-After

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", dash.metrics, name="metrics"),
    path("api/v1/", api.urls),
    path("", dash.overview, name="overview"),
    path("overview/data.json", dash.overview_data, name="overview-data"),
    path("monitor/<slug:slug>/", dash.system_page, name="system-monitor"),
    path("monitor/<slug:slug>/data.json", dash.system_data, name="system-monitor-data"),
    path("monitor/<slug:slug>/reference/", dash.system_reference, name="system-reference"),
    path("monitor/<slug:slug>/alerts/<str:alert_id>/ack/", dash.alert_ack, name="alert-ack"),
    path("monitor/<slug:slug>/breaker/", dash.system_breaker, name="system-breaker"),
    path("monitor/<slug:slug>/mitigation/", dash.system_mitigation, name="system-mitigation"),
    path("monitor/<slug:slug>/drill/", dash.system_drill, name="system-drill"),
    path("monitor/<slug:slug>/models/", hosted_views.system_models, name="system-models"),
    path("monitor/<slug:slug>/rollouts/", rollout_views.system_rollouts, name="system-rollouts"),
    path("monitor/<slug:slug>/rollouts/data.json", rollout_views.rollouts_data, name="system-rollouts-data"),
    path("killswitch/", views.killswitch, name="killswitch"),
    path("killswitch/releases/<str:request_id>/<str:decision>/", views.release_decide, name="release-decide"),
    path("demo/scenario/", views.demo_scenario, name="demo-scenario"),
    path("systems/", views.systems_page, name="systems"),
    path("systems/<slug:slug>/", views.system_edit, name="system-edit"),
    path("tokens/", views.tokens_page, name="tokens"),
    path("audit/", views.audit_page, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
    path("audit/verify/", views.audit_verify, name="audit-verify"),
    path("editorial/", editorial_views.index, name="editorial"),
    path("editorial/<slug:slug>/", editorial_views.system_page, name="editorial-system"),
    path("editorial/<slug:slug>/<str:kind>/add/", editorial_views.add, name="editorial-add"),
    path("editorial/<slug:slug>/<str:kind>/<str:rule_id>/remove/", editorial_views.remove, name="editorial-remove"),
    path("review/", review.queue, name="review-queue"),
    path("review/next/", review.claim_next, name="review-next"),
    path("review/quality/", quality_views.quality, name="review-quality"),
    path("decisions/", decision_views.search, name="decisions"),
    path("decisions/<str:decision_id>/", decision_views.detail, name="decision"),
    path("decisions/<str:decision_id>/override/", decision_views.override, name="decision-override"),
    path("review/<str:item_id>/", review.item, name="review-item"),
    path("review/<str:item_id>/act/", review.act, name="review-act"),
    path("review/<str:item_id>/heartbeat/", review.heartbeat, name="review-heartbeat"),
    path("review/<str:item_id>/give-back/", review.give_back, name="review-give-back"),
]

if settings.BENCH_BASELINE:
    # Only for `make bench`: the baselines the decision endpoint is measured against, a bare JSON
    # view and the same plus one committed INSERT of a decision row (the floor).
    from oversight import benchviews

    urlpatterns += [
        path("api/bare", benchviews.bare, name="bare"),
        path("api/bare-insert", benchviews.bare_insert, name="bare-insert"),
        path("api/score-in-process/<slug:slug>", benchviews.score_in_process, name="score-in-process"),
    ]
