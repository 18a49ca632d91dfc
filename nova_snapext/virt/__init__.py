"""The Nova glue: a libvirt driver subclass that uses the capture engine."""
