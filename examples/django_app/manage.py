#!/usr/bin/env python
"""Django's command-line utility for the example project::

    serla dev &                                   # http://127.0.0.1:8787
    SERLA_API_KEY=sk_live_dev python examples/django_app/manage.py runserver
    curl -X POST http://127.0.0.1:8000/signup/ -d plan=pro -H 'X-Demo-User: 42'

The ``X-Demo-User`` header stands in for a logged-in user (see ``shop/middleware.py``).
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
