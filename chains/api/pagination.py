"""Pages of the resource API: at most CHAINS_MAX_PAGE_SIZE rows, offsets the database can
take, and counts that never scan a whole large table."""
from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 10**9


class BoundedPagination(LimitOffsetPagination):
    """`limit` is capped at CHAINS_MAX_PAGE_SIZE (as DRF caps it: silently); an `offset` past
    MAX_OFFSET is a 400 rather than an overflow in the database."""

    def __init__(self) -> None:
        self.max_limit = settings.CHAINS_MAX_PAGE_SIZE

    def get_offset(self, request) -> int:
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"must be at most {MAX_OFFSET}"]})
        return offset


class RunPagination(BoundedPagination):
    """Counts at most COUNT_CAP runs past the requested offset (a LIMIT inside the COUNT), as
    the admin's run list does, rather than the whole run table on every page: `count` is
    exact below that and a lower bound above it; `next` is there whenever more runs are."""

    COUNT_CAP = 10_000

    def get_count(self, queryset) -> int:
        offset = self.get_offset(self.request)
        # values("pk"): the rows alone, without the annotations a page shows (a subquery per
        # row, e.g. the runs' version numbers).
        return queryset.order_by().values("pk")[: offset + self.COUNT_CAP].count()
