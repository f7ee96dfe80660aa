"""A bare DRF create endpoint with the project's default authentication, permission and
throttle classes (token auth, IsAuthenticated, user and anon rate throttles)."""
from rest_framework import generics, serializers

from bench.reference.models import Note


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text"]


class NoteCreateView(generics.CreateAPIView):
    queryset = Note.objects.all()
    serializer_class = NoteSerializer
