"""The provider's decisions, between the hook (HTTP) and the Airflow glue (operators, sensors, triggers).

``issuance`` (claims, fenced sends, outcomes), ``adoption`` (is a document found by reference ours?),
``batches`` (planning mapped issue tasks), ``ingestion`` (inbox files into the ledger),
``status_changes`` (``PUT /documents/{id}``), ``taxbureau`` (batch polling of the tax bureau),
``provisioning`` (``POST /accounts``) and ``report`` (a run's report). No operator code here.
"""
