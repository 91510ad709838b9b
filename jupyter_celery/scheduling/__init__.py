"""Scheduled notebooks, shared by every side: the schedule model, the registry, the run history
and the beat scheduler.

Used by the kernel side (``jc.schedule_notebook``, the magics), the CLI (``jupyter-celery
schedule``, ``jupyter-celery beat``) and the worker side (run records, the overlap lock). It
imports the core and no Jupyter code; papermill runs on the worker side only.
"""
