"""TokenRelay inference library: agents, units, selection, prompts, relay."""
