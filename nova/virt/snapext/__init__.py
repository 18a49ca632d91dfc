# Nova loads compute_driver only from nova.virt.*: this shim lets
# ``compute_driver = snapext.SnapextLibvirtDriver`` find the snapext driver.
from nova_snapext.virt.driver import SnapextLibvirtDriver  # noqa: F401
