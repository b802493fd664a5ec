"""spikecast.ext: the compiled event-driven engine and its validating Python wrappers."""
