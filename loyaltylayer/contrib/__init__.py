"""Optional integrations that need extra packages; each module imports its own dependency."""
