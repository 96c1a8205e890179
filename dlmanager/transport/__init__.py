"""The transport side: one request and its response, over ``requests`` or ``urllib3``.

An attempt sends a request, checks the response's headers and yields its body; the
errors of the transport become :mod:`dlmanager.errors`. Nothing here writes a file or
decides whether to retry.
"""
