"""The disk side: where a download's bytes live until they are published, and the files
processes share a destination directory through.

Nothing here makes a request; nothing here decides what to fetch.
"""
