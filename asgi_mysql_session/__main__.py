"""``python -m asgi_mysql_session``: the operator CLI (see :mod:`asgi_mysql_session.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
