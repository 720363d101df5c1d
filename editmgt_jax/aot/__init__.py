"""Ahead-of-time compiles for TPU topologies on any host (launch.aot, docs/pods.md)."""
