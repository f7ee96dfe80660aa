"""Chains: definitions, runs and the step types they are made of."""
