"""A trivial model behind a bare DRF create endpoint: the submit API benchmark's reference."""
