"""The Koywe page in Airflow's UI: the issuance ledger for people, behind Airflow's own login.

* :mod:`~koywe_provider.ui.asgi` — what the plugin ``plugins/koywe_ledger_ui.py`` registers: a lazy ASGI
  app mounted at ``/koywe-ledger`` on the API server, and the "Koywe" external view (Airflow's nav opens
  it in an iframe at ``/plugin/koywe``). Importing it imports nothing of FastAPI, Jinja2 or Airflow's
  API server, so the scheduler, workers and task runners that load plugins pay nothing for it.
* :mod:`~koywe_provider.ui.app` — the FastAPI app (server-rendered Jinja2 pages), built on the first
  request; every route requires an Airflow login and read access to the runs of
  ``koywe_daily_issuance`` (:mod:`~koywe_provider.ui.access`).
* :mod:`~koywe_provider.ui.render` — labels, amounts and the run report's Markdown as safe HTML.
"""
