"""The standard editing benchmarks: readers of their released layouts (one module per suite:
`magicbrush`, `emu_edit`, `pie_bench`, `gedit`), their metrics (`..benchmark_metrics`), the
backbone scorer (`scoring`) and the run harness (`harness`) behind `launch.benchmark`."""
