from django.urls import path

from dashboards import consumers

websocket_urlpatterns = [
    path("ws/status/", consumers.StatusConsumer.as_asgi()),
    path("ws/overview/", consumers.OverviewConsumer.as_asgi()),
    path("ws/systems/<slug:system>/", consumers.SystemConsumer.as_asgi()),
]
