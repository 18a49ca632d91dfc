"""The snapext API, served inside nova-api by a paste filter.

See :mod:`nova_snapext.api.filter` for where it sits in the pipeline and
what it serves; everything else passes through to Nova untouched.
"""
