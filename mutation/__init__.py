"""Mutation testing of the conformance suite: plausible bugs it must catch (see run.py)."""
