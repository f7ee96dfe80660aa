"""The project's URLs plus the reference endpoint at /bench/notes."""
from django.urls import include, path

from bench.reference.views import NoteCreateView

urlpatterns = [
    path("bench/notes", NoteCreateView.as_view(), name="bench-note-create"),
    path("", include("config.urls")),
]
