"""Runs the project locally: Airflow configured for this checkout, the local sandbox, the demo."""
