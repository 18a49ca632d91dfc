"""Where snapshot records and memory images are kept.

Stores are plugins in the ``snapext.stores`` entry point group.
"""

from stevedore import driver


def load(name, conf):
    """Instantiate the store plugin ``name`` with the given config."""
    return driver.DriverManager('snapext.stores', name,
                                invoke_on_load=True,
                                invoke_args=(conf,)).driver
