"""Infrastructure every stage uses: typed config, Spark session, the Delta lake, progress, date scope."""
