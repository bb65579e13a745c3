# -*- coding: utf-8 -*-
# Copyright: dbsafe.django contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seconds per named step of a module run (the ``timings`` every long-running module returns)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


class Timings(dict):
    """{step: seconds}; ``run`` times a call under a name, also when it raises."""

    def run(self, name, function, *args, **kwargs):
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            self[name] = round(time.time() - started, 3)
