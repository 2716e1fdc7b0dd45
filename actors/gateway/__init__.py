"""The HTTP gateway actor: an OpenAI-compatible API (and the native ask protocol) over the bus.

``actor.py`` runs uvicorn inside the actor's task group; ``app.py`` is the Starlette app;
``chat.py`` translates OpenAI chat requests and replies; ``errors.py`` maps Failures to HTTP;
``keys.py`` holds the virtual keys; ``models.py`` resolves a ``model`` to a route; ``asks.py``
serves ``/v1/asks``. ``config.py`` is the ``[gateway]`` table (imported by ``actors.settings``, so
this package imports nothing heavy at its top).
"""
