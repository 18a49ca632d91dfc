"""Tests against a real OpenStack: tools/aio/aio.sh up first."""
