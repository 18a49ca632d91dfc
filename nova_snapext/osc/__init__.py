"""The ``openstack server snapshot ...`` commands (an OSC plugin)."""
