"""REST API: the seed contract under /tasks and the resource API under /api/."""
