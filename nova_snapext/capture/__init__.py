"""The capture engine: libvirt only, no Nova imports.

Pure modules (``domain_xml``, ``chain``) hold the XML building and chain
math; ``engine`` is the only place that drives libvirt and qemu-img.
"""
