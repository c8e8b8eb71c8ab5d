"""Measuring tools for GPU sittings: vLLM's offline engine, kernel profiles, replicas, side by
side comparisons. Not part of the app: nothing in the app, UI or API imports this package, and
the Docker image leaves it out. See perf/README.md.
"""
