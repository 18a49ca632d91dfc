import sys
sys.argv = sys.argv[:1]
from neutron.wsgi.api import application  # noqa: E402,F401
# A fresh worker's first GET /v2.0/ports fails ("type object 'Port' has no
# attribute 'port_forwardings'") unless every mapper is configured now.
import sqlalchemy.orm  # noqa: E402
sqlalchemy.orm.configure_mappers()
