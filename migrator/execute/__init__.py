"""The executor: steps, their durable journal and secret stash, and the staged engine."""
