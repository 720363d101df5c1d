"""The browser editor and its HTTP API over the `Editor` (started by `python -m launch.serve`).

    access.py    who may connect: loopback by default, passwords for any other address
    inputs.py    one request's raw values -> a validated edit (clear errors naming the problem)
    batching.py  concurrent requests -> padded fixed-size sampler calls (bit-identical results)
    outputs.py   an edit's PNGs (own names, written atomically) and its info box
    examples.py  the clickable examples from a jobs JSONL (examples/jobs.jsonl)
    guard.py     what the HTTP routes may serve and accept (the app's files only, no URLs)
    app.py       the Gradio Blocks page and the `/edit` endpoint
    server.py    warm-up, queue and launch (offline: no analytics, no share link)

Gradio's analytics are switched off here, before anything imports gradio.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
