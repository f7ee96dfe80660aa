"""One trivial model, written by the reference endpoint."""
from django.db import models


class Note(models.Model):
    text = models.TextField()

    def __str__(self) -> str:
        return self.text
