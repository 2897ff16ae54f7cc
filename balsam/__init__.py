"""Balsam compatibility: ``from balsam.api import Job, ApplicationDefinition, site_config``
runs a Balsam user's script unchanged against balsamctl's store (see ``balsam.api``)."""
