"""The demo: a scenario over the sandbox provider, and the commands `make run` uses."""
