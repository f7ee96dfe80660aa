"""The project's own signals. Services send them; chains.signals receives them."""
from django.dispatch import Signal

# A run is ready to go (new, retried, resumed after a stall, or published anew after its
# worker died or its publishing failed): sent with `run_id`; for a new run also `run` and
# `step_runs`, its rows as just written (published whole, without reading them back); for a
# resumed run `resumed=True`, so a broker that is still away gives the resume back.
run_ready = Signal()

# A run ended (COMPLETED, FAILED or CANCELLED): sent with `run_id` (and, when known, its
# `chain_id` and `parent_step_id`) by the one service that ends runs (services.runs.run_end);
# a parent run waiting for it goes on.
run_ended = Signal()

# A run started waiting for an approval: sent with `run_id` and `step_run_id` by
# services.workflows.approval_wait; notifications tell whom the chain's rules name.
run_waiting = Signal()
