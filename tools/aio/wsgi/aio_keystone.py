# keystone.wsgi.api parses sys.argv through oslo.config: hide gunicorn's.
import sys
sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
