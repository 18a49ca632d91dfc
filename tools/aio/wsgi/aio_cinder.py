# cinder.wsgi.wsgi has no config-location variable: pass its files here.
import os
import sys
sys.argv = [sys.argv[0], '--config-file', os.environ['AIO_CINDER_CONF'],
            '--log-file', os.environ['AIO_CINDER_API_LOG']]
from cinder.wsgi import wsgi  # noqa: E402
application = wsgi.initialize_application()
