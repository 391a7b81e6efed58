"""The fixture's async implementation (the generator's input)."""
