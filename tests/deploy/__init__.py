"""Tests of the deployment artifacts: Dockerfile, Kubernetes manifests, compose stack, example
settings, packaging (LICENSE, wheel, Makefile install stamps) and their documentation."""
