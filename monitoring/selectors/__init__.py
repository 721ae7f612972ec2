"""Reads of the monitoring data, one module per kind (import the module you need):

- :mod:`monitoring.selectors.samples`: the telemetry samples (the latest per host, bucketed time
  series, summaries, and the JSON shape of one sample);
- :mod:`monitoring.selectors.requests`: the per-request figures of the chat and their
  throughput aggregates.

The writes (taking, publishing and pruning samples) are in :mod:`monitoring.services`.
"""
