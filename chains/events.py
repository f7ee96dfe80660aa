"""The project's own signals. Services send them; chains.signals receives them."""
from django.dispatch import Signal

# A run is ready to go (new, retried, or published anew after its worker died): sent with
# `run_id`, and for a new run `run` and `step_runs`, its rows as just written (published
# whole, without reading them back).
run_ready = Signal()
