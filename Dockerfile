# The Koywe Airflow image: the official Apache Airflow 3.3.2 image (Python 3.11, the lock's Python) plus
# the locked requirements and this project, installed at build time (not at container start).
FROM apache/airflow:3.3.2-python3.11

USER airflow
WORKDIR /opt/koywe

# Dependencies first: this layer is rebuilt only when the lock changes. The lock pins
# apache-airflow==3.3.2 itself, so pip cannot move the image's Airflow.
COPY --chown=airflow:0 requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# The project: the provider (plugins/koywe_provider) and the helper packages of include/.
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 include ./include
RUN pip install --no-cache-dir --no-deps .

WORKDIR /opt/airflow
# Baked in so the image runs alone; docker-compose.yaml mounts the checkout's folders over them.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 plugins /opt/airflow/plugins
# The mounted include/ comes first on the path, so edits to it need no rebuild.
ENV PYTHONPATH=/opt/airflow/include
