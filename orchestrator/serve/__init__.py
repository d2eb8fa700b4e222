"""``module-system serve``: the run history, live runs, batch submission, metrics and a dashboard over HTTP.

* :mod:`~orchestrator.serve.command`: the command (bind, tokens, uvicorn);
* :mod:`~orchestrator.serve.app`: the FastAPI app and the server's long-lived parts;
* :mod:`~orchestrator.serve.api`: ``/api/v1`` and ``/metrics``; :mod:`~orchestrator.serve.models` its bodies;
* :mod:`~orchestrator.serve.auth`: bearer tokens with scopes, the rate limit;
* :mod:`~orchestrator.serve.runs`: the batches it runs, one at a time, in a background thread;
* :mod:`~orchestrator.serve.events`: each served run's event bus (the SSE stream);
* :mod:`~orchestrator.serve.metrics`: the served runs' Prometheus metrics, summed;
* :mod:`~orchestrator.serve.dashboard`: the HTML pages (``templates/``, ``static/``).

FastAPI, uvicorn, sse-starlette and Jinja2 come with the ``serve`` extra. See docs/SERVE.md.
"""
