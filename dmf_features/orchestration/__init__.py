"""What the Airflow DAGs in `dags/` need from the project: which day a run processes (`days`), the
environment and Spark connection the services run with (`environment`), starting those services
(`services`), and the DAGs' shared parts (`dag_parts`, the only module here that imports Airflow).
Nothing here imports pyspark or torch at module level: the DAG processor parses DAG files often."""
