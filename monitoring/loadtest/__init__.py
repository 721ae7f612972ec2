"""Load test: real concurrent chats through the gateway, to see how throughput degrades with
concurrency and whether the box is bound by VRAM or by compute.

Run it with ``manage.py loadtest --model M --concurrency 1,2,4,8 --requests 20`` against a
running server (see ``monitoring/management/commands/loadtest.py`` for authentication). This
package is plain Python (httpx and the standard library): it talks to the server over HTTP only.

- :mod:`monitoring.loadtest.driver`: the configuration, authentication and the HTTP driving of
  the chats, level after level (``run``);
- :mod:`monitoring.loadtest.verdict`: the per-level summaries and the verdict (gate-, VRAM- or
  compute-bound);
- :mod:`monitoring.loadtest.report`: the table, the CSV and the HTML page with its charts.
"""
