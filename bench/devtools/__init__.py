"""Developer measurements (`python -m bench.devtools.X`); nothing of the harness imports them."""
