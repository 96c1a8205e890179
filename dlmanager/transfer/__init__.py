"""The transfer loop: fill a download's temporary file with the bytes of one URL.

Retries, resume, checkpoints and verification are decided here, once, for both ways of
filling the file: one stream, or segments over several connections.
"""
