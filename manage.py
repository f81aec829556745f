#!/usr/bin/env python
"""Django's command-line utility for ImageActions."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    from django.core.management import execute_from_command_line

    from imageactions.startup import prepare_data_dir

    prepare_data_dir()
    execute_from_command_line(sys.argv)
