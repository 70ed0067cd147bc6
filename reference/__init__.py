"""Published NetVLAD numbers and the harness that reproduces them."""
