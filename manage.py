#!/usr/bin/env python
"""Django's command-line utility; on a checkout it runs the local settings."""

import os
import sys

LOCAL_SETTINGS = "emergence.settings_local"
LOCAL_NOTICE = (
    "WARNING manage.py: local development settings (emergence.settings_local: "
    "DEBUG on, a development SECRET_KEY unless one is set); production sets "
    "DJANGO_SETTINGS_MODULE=emergence.settings"
)


def main() -> None:
    """Run administrative tasks, with the local settings unless told otherwise."""
    # Production names its settings (the Dockerfile, `make migrate`, `make serve`):
    # a checkout without them is somebody trying the app, who needs no secret.
    if "DJANGO_SETTINGS_MODULE" not in os.environ:
        os.environ["DJANGO_SETTINGS_MODULE"] = LOCAL_SETTINGS
        print(LOCAL_NOTICE, file=sys.stderr)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
