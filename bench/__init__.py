"""Benchmarks for llm-fleet: real worker processes, local RabbitMQ, the mock provider.

Every fleet figure is measured beside a direct httpx baseline against the same
mock in the same run. `python -m bench.run --help` lists the benchmarks.
"""
