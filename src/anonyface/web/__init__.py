"""`anonyface serve`: a page and an HTTP API on this machine (`pip install "anonyface[web]"`).

`app.create_app` builds the ASGI app, `jobs` holds the work (models, workers,
temporary folders), `options` maps form fields onto the CLI's options and
`serve.main` is the command. Nothing here sends anything anywhere.
"""
