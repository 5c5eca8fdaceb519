"""Shared layer of both stages: data contract, strict config, dataset adapters, demo data.

Imports only the standard library, numpy and yaml (never torch, never a stage), so that a
pose estimator can run in its own virtual environment with this package beside it.
"""
