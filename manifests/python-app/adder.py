"""The seed's Adder, kept in git: copy this file into your site's ``apps/`` directory (which
every Python app and hook process has on its ``sys.path``), then ``balsamctl apply -f
python-app.yaml`` — or run this file: it syncs the class and submits a job as futures.

    balsamctl init mysite && cp adder.py mysite/apps/ && cd mysite
    balsamctl up &                       # a controller manager and a node agent
    python apps/adder.py                 # 3 + 7 = 10
"""

from __future__ import annotations

from balsam.api import ApplicationDefinition


class Adder(ApplicationDefinition):
    """Adds two numbers (a Python app: run() instead of a command template)."""

    def run(self, x, y):
        return x + y


if __name__ == "__main__":
    job = Adder.submit("adder/demo", x=3, y=7)
    print(f"3 + 7 = {job.result(timeout=120)}")
