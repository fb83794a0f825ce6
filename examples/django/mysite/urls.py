"""The example's routes."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("login", views.login),
    path("count", views.count),
    path("logout", views.logout),
]
